"""`python -m korall_workloads.fetch`: download and verify one model into the node cache, then exit.

Run as an init container before the vision service. Configuration comes from the environment only
(`--help` lists it). Exit 0 when the model is in the cache and verified; otherwise the exit code and the
reason word of `failures.Reason`, with the same line on stderr and in the termination message:

    ModelDownloadFailed: ChecksumMismatch: https://store.example/models/m.tflite?... gave 6 bytes ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from korall_contract import MODEL_DOWNLOAD_FAILED, FetchEnv
from pydantic import ValidationError

from korall_workloads.common.logs import configure_logging
from korall_workloads.common.settings import describe_validation_error

from .failures import FetchFailure, Reason, one_line, write_termination_message
from .fetcher import fetch
from .settings import FetchSettings

log = logging.getLogger("korall_workloads.fetch")


def _help() -> str:
    lines = ["environment:"]
    for field in FetchSettings.model_fields.values():
        default = "required" if field.is_required() else f"default {field.default}"
        lines.append(f"  {field.validation_alias}  ({default})\n      {field.description}")
    lines.append("exit codes: 0 ok, " + ", ".join(f"{r.exit_code} {r.word}" for r in Reason))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m korall_workloads.fetch",
        description="Download one model into the node's content-addressed cache and verify its sha256.",
        epilog=_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        settings = FetchSettings()  # type: ignore[call-arg]  # sha256 comes from the environment
    except ValidationError as exc:
        line = one_line(
            f"{MODEL_DOWNLOAD_FAILED}: {Reason.INVALID_CONFIGURATION.word}: "
            f"{describe_validation_error(exc, FetchSettings)}"
        )
        path = os.environ.get(FetchEnv.TERMINATION_MESSAGE_PATH) or "/dev/termination-log"
        write_termination_message(Path(path), line)
        print(line, file=sys.stderr)
        return Reason.INVALID_CONFIGURATION.exit_code

    configure_logging(settings.log_level, settings.log_json)
    try:
        outcome = fetch(settings)
    except FetchFailure as exc:
        line, code = exc.termination_line(), exc.reason.exit_code
        log.error("%s", line)
    except Exception as exc:  # a bug: keep the traceback in the log, still end with one line
        log.exception("unexpected failure")
        line = FetchFailure(Reason.UNEXPECTED, f"{type(exc).__name__}: {exc}").termination_line()
        code = Reason.UNEXPECTED.exit_code
    else:
        line, code = one_line(outcome.summary()), 0
        log.info("%s", line)
    write_termination_message(settings.termination_message_path, line)
    return code


if __name__ == "__main__":
    sys.exit(main())
