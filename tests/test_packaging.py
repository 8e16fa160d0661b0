"""What can be checked of the images and the compose file without a Docker engine (there is none here).

Every file a Dockerfile copies must exist and survive .dockerignore; the base image, the Debian packages and
the Python packages must be pinned; the vision image must run as non-root with a HEALTHCHECK and carry the
models of the manifest; docker-compose.yml must publish 5052 on the loopback address only, keep the models on a
volume and map the Edge TPU.
A user that joins device groups (plugdev, audio) is set by its uid alone, so that those groups apply, and every
`docker run` example or compose service that maps a device also adds the host's group of that device.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(ROOT.glob("Dockerfile.*"))
VISION = ROOT / "Dockerfile.vision"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += " " + line.removesuffix("\\") if pending else line.removesuffix("\\")
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _args(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in _instructions(path) if k == "ARG" and "=" in a)


def _dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        pat = pattern.removeprefix("**/")
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            if fnmatch.fnmatch(prefix, pattern) or (fnmatch.fnmatch(parts[i], pat) and pattern.startswith("**/")):
                return True
    return False


def _copy_sources(path: Path) -> list[str]:
    sources = []
    for word, args in _instructions(path):
        if word != "COPY" or "--from=" in args:
            continue
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        sources.extend(tokens[:-1])
    return sources


def _commands(shell: str) -> list[list[str]]:
    """A RUN line's commands as token lists, split on && ; || and | outside quotes."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";", "||", "|", ">", ">>"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def test_there_are_dockerfiles() -> None:
    assert VISION in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_file_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    ignore = _dockerignore()
    sources = _copy_sources(dockerfile)
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which does not exist"
        assert not _ignored(src.rstrip("/"), ignore), f"{dockerfile.name} copies {src}, which .dockerignore drops"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    args = _args(dockerfile)
    for word, rest in _instructions(dockerfile):
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d+\.\d+\.\d+", tag), f"{dockerfile.name}: {image} is not pinned to a version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_debian_and_python_packages_are_pinned(dockerfile: Path) -> None:
    for word, rest in _instructions(dockerfile):
        if word != "RUN":
            continue
        for tokens in _commands(rest):
            if "apt-get" in tokens and "install" in tokens:
                packages = [t for t in tokens[tokens.index("install") + 1 :] if not t.startswith("-")]
                assert packages
                for package in packages:
                    assert "=" in package, f"{dockerfile.name}: apt package {package} is not pinned"
            if "pip" in " ".join(tokens) and "install" in tokens and "venv" not in tokens:
                assert "-c" in tokens and "constraints.txt" in tokens, f"{dockerfile.name}: pip without constraints"


def test_every_extra_is_pinned_in_pyproject_and_constraints() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    extras = pyproject["project"]["optional-dependencies"]
    assert set(extras) == {"service", "vision", "audio", "operator", "dev"}
    for extra in extras:
        for req in extras[extra]:
            if req.startswith("korall["):
                continue
            name, _, version = req.partition("==")
            name = name.split("[")[0]  # moto[server]: the package's own pin
            assert version, f"{req} in [{extra}] is not pinned"
            assert pins.get(name.lower().replace("_", "-")) == version, f"{req} disagrees with constraints.txt"


def test_vision_image_runs_non_root_with_healthcheck_and_edgetpu() -> None:
    steps = _instructions(VISION)
    words = [w for w, _ in steps]
    args = _args(VISION)
    user = [a for w, a in steps if w == "USER"][-1]
    assert not user.startswith(("root", "0")), user
    health = " ".join(a for w, a in steps if w == "HEALTHCHECK")
    assert "/health" in health and "urllib" in health and "curl" not in health
    assert "EXPOSE" in words and any(a == "5052" for w, a in steps if w == "EXPOSE")
    run = " ".join(a for w, a in steps if w == "RUN")
    assert "coral-edgetpu-stable" in run and "libedgetpu1-std=${LIBEDGETPU_VERSION}" in run
    assert re.fullmatch(r"\d+\.\d+", args["LIBEDGETPU_VERSION"])
    assert "--groups plugdev" in run
    assert [a for w, a in steps if w == "ENTRYPOINT"] == ['["python", "-m", "korall_workloads.vision"]']
    assert "vision-service:coral-apt" in VISION.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_a_user_in_supplementary_groups_is_set_by_its_uid_alone(dockerfile: Path) -> None:
    """Docker's USER reference: "when specifying a group for the user, the user will have only the specified group
    membership". So a user created in extra groups (plugdev, audio) must be set as `USER <uid>`, never `<uid>:<gid>`:
    then the runtime reads its primary and supplementary groups from the image's /etc/passwd and /etc/group."""
    steps = _instructions(dockerfile)
    user = [a for w, a in steps if w == "USER"][-1]
    useradd = [c for w, a in steps if w == "RUN" for c in _commands(a) if c[0] == "useradd"]
    assert len(useradd) == 1, f"{dockerfile.name}: expected one useradd"
    options = dict(zip(useradd[0], useradd[0][1:], strict=False))  # each token and the next: --uid -> 10001
    assert re.fullmatch(r"\d+", options["--uid"]) and options["--uid"] != "0"
    if "--groups" in options:
        assert user == options["--uid"], f"{dockerfile.name}: USER {user} drops the groups {options['--groups']}"
    else:
        assert user.split(":")[0] == options["--uid"]


def _docker_runs(path: Path) -> list[str]:
    """Every `docker run` example in a file (Dockerfile comments or Markdown), continuation lines joined."""
    runs, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip().lstrip("#").strip()
        current = f"{current} {line.removesuffix(chr(92))}" if current else line.removesuffix(chr(92))
        if line.endswith("\\"):
            continue
        if "docker run" in current:
            runs.append(" ".join(current.split()))
        current = ""
    return runs


def test_every_docker_run_that_maps_a_device_adds_the_hosts_group() -> None:
    """A device node opens by the host's gid of its group, which the image's own group may not match."""
    files = [*DOCKERFILES, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    runs = [(path.name, run) for path in files for run in _docker_runs(path)]
    with_device = [(name, run) for name, run in runs if "--device " in run or " -v /dev/" in run]
    assert len(with_device) >= 4, with_device  # USB and PCIe TPU, microphone (Dockerfiles and docs)
    for name, run in with_device:
        assert re.search(r'--group-add "\$\(getent group \w+ \| cut -d: -f3\)"', run), f"{name}: {run}"


def test_compose_services_that_map_a_device_add_its_group() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mapping = {
        name: s
        for name, s in services.items()
        if s.get("devices") or any(str(v).startswith("/dev/") for v in s.get("volumes", []))
    }
    assert "vision" in mapping
    assert mapping["vision"]["group_add"] == ["46"]  # plugdev on Debian/Ubuntu hosts
    for name, service in mapping.items():
        assert service.get("group_add"), name


def test_vision_image_carries_every_model_of_the_manifest() -> None:
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    copied = {Path(s).name for s in _copy_sources(VISION) if s.startswith("models/")}
    for model in manifest["models"]:
        assert model["file"] in copied
    assert set(manifest["labels"]) <= copied and "manifest.json" in copied
    env = " ".join(a for w, a in _instructions(VISION) if w == "ENV")
    assert "MODELS_DIR=/models" in env and "HOST=0.0.0.0" in env


def test_compose_serves_vision_on_5052_with_models_volume_and_tpu_access() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    vision = compose["services"]["vision"]
    assert (ROOT / vision["build"]["dockerfile"]).resolve() == VISION
    assert vision["image"] == "vision-service:coral-apt"
    assert vision["ports"] == ["127.0.0.1:5052:5052"]  # loopback only (issue 15): the LAN needs tokens first
    assert compose["services"]["audio"]["ports"] == ["127.0.0.1:5053:5053"]
    volumes = vision["volumes"]
    named = [v for v in volumes if v.split(":")[1] == "/models"]
    assert named and named[0].split(":")[0] in compose["volumes"]
    assert "/dev/bus/usb:/dev/bus/usb" in volumes  # the whole bus, not one device node
    assert "c 189:* rmw" in vision["device_cgroup_rules"]
    assert "/dev/apex_0:/dev/apex_0" in text  # the PCIe alternative, documented in place
