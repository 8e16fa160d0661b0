"""`Setting`: an environment variable name that also says what its value may be.

A Setting *is* its variable's name (a `str`), so code that only needs the name uses it as before
(`env[VisionEnv.TOPK] = ...`, `Field(validation_alias=VisionEnv.TOPK)`). A variable that carries a CRD field to a
workload also carries its type, range, choices and default here, and every layer takes them from here:

- the CRD schema (`python -m korall_tools.crds` writes them into crds/*.yaml; a test checks the files agree);
- the operator's spec models (`korall_operator.specs`), which parse every CR again;
- the workload's settings (`korall_workloads.common.settings.from_contract`), which read the variable.

So a value the API server admits is one the workload accepts (tests/test_contract.py walks every minimum, maximum,
default and choice through the manifest builders into the workload's settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Setting(str):
    """The variable's name, plus what both sides accept.

    - `kind`: int, float, str or bool (float is `number` in the CRD schema);
    - `minimum`, `maximum`: inclusive bounds; `choices`: the values the workload accepts;
    - `default`: what the workload assumes when the variable is unset, and the CRD's default;
    - `crd`: where it comes from, as "Kind:spec.path" (`InferenceModel:spec.topK`), or several such places (a
      block both CRDs have, such as `spec.events`);
    - `pattern`: a regular expression a string must match (written into the CRD too);
    - `crd_choices` / `crd_default`: only where the CRD deliberately differs: it offers fewer choices (the
      workload's `auto` accelerator cannot be scheduled: the CRD asks for an explicit one), or has no default
      (`crd_default=None`: an optional field).
    """

    kind: type
    default: Any
    minimum: float | None
    maximum: float | None
    choices: tuple[Any, ...] | None
    pattern: str | None
    crds: tuple[str, ...]
    crd_choices: tuple[Any, ...] | None
    crd_default: Any
    description: str

    def __new__(
        cls,
        name: str,
        kind: type = str,
        *,
        default: Any = None,
        minimum: float | None = None,
        maximum: float | None = None,
        choices: Sequence[Any] | None = None,
        pattern: str | None = None,
        crd: str | Sequence[str] | None = None,
        crd_choices: Sequence[Any] | None = None,
        crd_default: Any = ...,
        description: str = "",
    ) -> Setting:
        self = super().__new__(cls, name)
        self.kind = kind
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.choices = tuple(choices) if choices is not None else None
        self.pattern = pattern
        self.crds = (crd,) if isinstance(crd, str) else tuple(crd or ())
        self.crd_choices = tuple(crd_choices) if crd_choices is not None else self.choices
        self.crd_default = default if crd_default is ... else crd_default
        self.description = description
        return self

    @property
    def name(self) -> str:
        return str(self)

    @property
    def crd(self) -> str | None:
        """The (first) CRD field it comes from, if any."""
        return self.crds[0] if self.crds else None

    @property
    def crd_fields(self) -> list[tuple[str, tuple[str, ...]]]:
        """(kind, path under the spec) of every CRD field it comes from: ("InferenceModel", ("topK",))."""
        fields = []
        for crd in self.crds:
            kind, dotted = crd.split(":", 1)
            path = dotted.split(".")
            fields.append((kind, tuple(path[1:] if path[0] == "spec" else path)))
        return fields

    @property
    def crd_kind(self) -> str | None:
        """The kind of its (first) CRD field ("InferenceModel"), if any."""
        return self.crd_fields[0][0] if self.crds else None

    @property
    def crd_path(self) -> tuple[str, ...]:
        """The path of its (first) CRD field under the spec: ("topK",) or ("audio", "thresholds", "loudDbfs")."""
        return self.crd_fields[0][1] if self.crds else ()

    def as_env(self, value: Any) -> str:
        """The value as the variable's text (booleans as true/false)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


def settings_of(env_class: type) -> list[Setting]:
    """Every Setting an *Env class declares (inherited ones included), in name order."""
    found = {getattr(env_class, key) for key in dir(env_class) if key.isupper()}
    return sorted((s for s in found if isinstance(s, Setting)), key=str)


def crd_settings(*env_classes: type) -> list[Setting]:
    """The Settings that come from a CRD field, across the given classes."""
    return sorted({s for cls in env_classes for s in settings_of(cls) if s.crd}, key=str)
