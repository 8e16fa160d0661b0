"""Keep the CRD schemas in line with the contract: `python -m korall_tools.crds [--check]`.

Every variable of `korall_contract` that carries a CRD field (`Setting.crd`) owns that field's `type`, `minimum`,
`maximum`, `enum`, `default` and `description` in crds/*.yaml; this writes them there, and makes an object's
`default` the whole of its children's defaults (a real API server checks a default against the CEL rules without
applying the nested defaults first: `{}` was refused). Everything else in the files (structure, CEL rules,
printer columns, comments) stays as written: the files are edited in place with ruamel.yaml's round trip. The
chart ships byte-identical copies (charts/korall/crds), written too.

`--check` changes nothing and exits 1 naming every difference: the test suite runs it (tests/test_contract.py).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from korall_contract import AudioEnv, EventsEnv, Setting, VisionEnv, crd_settings
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "InferenceModel": "inferencemodels.korall.io.yaml",
    "CaptureProfile": "captureprofiles.korall.io.yaml",
}
FOLDERS = (ROOT / "crds", ROOT / "charts" / "korall" / "crds")
SCHEMA_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a line that was written long
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def spec_schema(crd: Any) -> Any:
    """The openAPIV3Schema of `spec` in the (single) served version."""
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def owned_keys(setting: Setting) -> dict[str, Any]:
    """What the contract says of the CRD field, as schema keys (None: the key must not be there)."""
    return {
        "type": SCHEMA_TYPES[setting.kind],
        "description": setting.description or None,
        "minimum": _number(setting.minimum, setting.kind),
        "maximum": _number(setting.maximum, setting.kind),
        "enum": list(setting.crd_choices) if setting.crd_choices else None,
        "pattern": setting.pattern,
        "default": setting.crd_default,
    }


def _plain(value: Any) -> Any:
    """A YAML value as plain Python, for comparing (2 == 2.0: a number is a number to the API server)."""
    return [_plain(v) for v in value] if isinstance(value, list) else value


def _flow(value: Any) -> Any:
    """Lists written inline (`enum: [a, b]`), as the files write them."""
    if not isinstance(value, list):
        return value
    seq = CommentedSeq(value)
    seq.fa.set_flow_style()
    return seq


def _number(value: float | None, kind: type) -> Any:
    if value is None:
        return None
    return int(value) if kind is int or float(value).is_integer() else value


def sync(kind: str, crd: Any) -> list[str]:
    """Write the contract's keys into the CRD (in place); returns what changed, one line each."""
    changes: list[str] = []
    spec = spec_schema(crd)
    for setting in crd_settings(VisionEnv, AudioEnv, EventsEnv):
        for crd_kind, path in setting.crd_fields:
            if crd_kind != kind:
                continue
            node = spec
            for part in path:
                node = node["properties"][part]
            where = f"{kind} spec.{'.'.join(path)}"
            for key, want in owned_keys(setting).items():
                have = node.get(key)
                if want is None and key in node:
                    del node[key]
                    changes.append(f"{where}: {key} removed ({setting})")
                elif want is not None and _plain(have) != _plain(want):
                    node[key] = _flow(want)
                    changes.append(f"{where}: {key} {have!r} -> {want!r} ({setting})")
    for dotted, obj in _objects(spec):
        if "default" in obj:
            whole = CommentedMap((k, v["default"]) for k, v in obj["properties"].items() if "default" in v)
            whole.fa.set_flow_style()
            if {k: _plain(v) for k, v in obj["default"].items()} != {k: _plain(v) for k, v in whole.items()}:
                changes.append(f"{kind} {dotted}: default {dict(obj['default'])} -> {dict(whole)} (its children's)")
                obj["default"] = whole
    return changes


def _objects(node: Any, path: str = "spec") -> Iterator[tuple[str, Any]]:
    for name, child in (node.get("properties") or {}).items():
        if child.get("type") == "object" and "properties" in child:
            yield from _objects(child, f"{path}.{name}")
            yield f"{path}.{name}", child


def render(kind: str) -> tuple[str, list[str]]:
    """The CRD file of `kind` as the contract says it should be, and the changes from the committed one."""
    yaml = _yaml()
    text = (FOLDERS[0] / CRD_FILES[kind]).read_text()
    crd = yaml.load(text)
    changes = sync(kind, crd)
    out = io.StringIO()
    yaml.dump(crd, out)
    return out.getvalue(), changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m korall_tools.crds", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the files differ")
    args = parser.parse_args(argv)
    stale = []
    for kind, name in CRD_FILES.items():
        text, changes = render(kind)
        for folder in FOLDERS:
            path = folder / name
            if path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
                if not args.check:
                    path.write_text(text)
        for change in changes:
            print(change)
    if stale:
        verb = "differs from the contract" if args.check else "written"
        print("\n".join(f"{path}: {verb}" for path in stale))
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
