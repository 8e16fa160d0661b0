"""`python -m korall_workloads.vision`: validate the configuration, then serve with uvicorn (uvloop + httptools).

A bad environment value stops the process here with one line naming the variable, and exit code 2.
ACCELERATOR=edgetpu without a usable Edge TPU stops it with one line and exit code 1: it refuses to start.
"""

from __future__ import annotations

import sys


def main() -> int:
    from korall_workloads.common.event_settings import EventsSettings
    from korall_workloads.common.settings import load_or_exit

    from .camera.settings import CaptureSettings
    from .settings import VisionSettings

    settings = load_or_exit(VisionSettings, "vision")
    capture = load_or_exit(CaptureSettings, "vision")
    events = load_or_exit(EventsSettings, "vision")

    if settings.accelerator == "edgetpu":
        from .runtime import ModelLoadError, require_edgetpu

        try:
            require_edgetpu(settings)
        except ModelLoadError as exc:
            print(f"korall vision: refusing to start: {exc}", file=sys.stderr)
            return 1

    import uvicorn

    from korall_workloads.common.logs import configure_logging

    from .app import create_app

    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings, capture=capture, events_settings=events)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,  # keep the handlers configure_logging installed
        access_log=False,  # /infer logs its own line with bytes, size and timings
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
