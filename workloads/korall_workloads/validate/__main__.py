"""`python -m korall_workloads.validate`: judge one model, write the JSON result, exit.

Exit 0 Passed, 1 Failed, 2 Error (docs/catalog.md). The result goes to the termination message (the operator reads
it), to stdout, and to the log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from korall_contract import ValidateEnv, env_names
from pydantic import ValidationError

from korall_workloads.common.logs import configure_logging
from korall_workloads.common.settings import describe_validation_error

from .checks import validate
from .result import Result
from .settings import ValidateSettings

log = logging.getLogger("korall_workloads.validate")


def write_termination_message(path: Path, text: str) -> None:
    """Only into an existing file: the kubelet creates it, and a run outside a pod must not create it."""
    try:
        with path.open("r+", encoding="utf-8") as f:
            f.truncate(0)
            f.write(text)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m korall_workloads.validate",
        description="Validate one model: checksum, structure, and a golden set of images on it or its CPU twin.",
        epilog="environment: " + ", ".join(sorted(env_names(ValidateEnv))),
    ).parse_args(argv)
    try:
        settings = ValidateSettings()  # type: ignore[call-arg]  # the model comes from the environment
    except ValidationError as exc:
        sha = os.environ.get(ValidateEnv.MODEL_SHA256, "")
        result = Result(sha, "Error", "InvalidConfiguration", describe_validation_error(exc, ValidateSettings))
        path = Path(os.environ.get(ValidateEnv.TERMINATION_MESSAGE_PATH) or "/dev/termination-log")
    else:
        configure_logging(settings.log_level, settings.log_json)
        result = validate(settings)
        path = settings.termination_message_path
        log.info("validation %s (%s): %s", result.verdict, result.reason, result.message)
    text = result.as_json()
    write_termination_message(path, text)
    print(text)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
