"""`python -m korall_workloads.audio`: read the configuration, then serve.

A bad configuration prints one line naming the variable and exits with status 2, without a traceback.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError


def main() -> int:
    from .settings import AudioSettings, describe_validation_error

    try:
        settings = AudioSettings()
    except ValidationError as exc:
        print(f"korall audio: invalid configuration: {describe_validation_error(exc)}", file=sys.stderr)
        return 2

    import uvicorn

    from korall_workloads.audio.app import create_app
    from korall_workloads.common.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
