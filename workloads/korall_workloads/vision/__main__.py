"""`python -m korall_workloads.vision`: validate the configuration, then serve with uvicorn (uvloop + httptools).

A bad environment value, a token file that does not parse, or limits that cannot fit the container's memory stop
the process here with one line naming the variable, and exit code 2. ACCELERATOR=edgetpu without a usable Edge TPU
stops it with one line and exit code 1: it refuses to start.
"""

from __future__ import annotations

import logging
import sys


def main() -> int:
    from korall_workloads.common.auth import TokenFileError, check_token_file
    from korall_workloads.common.event_settings import EventsSettings
    from korall_workloads.common.http_settings import HttpSettings
    from korall_workloads.common.settings import load_or_exit

    from .camera.settings import CaptureSettings
    from .memory_plan import MemoryPlanError, container_memory_limit, plan_memory
    from .settings import VisionSettings

    settings = load_or_exit(VisionSettings, "vision")
    capture = load_or_exit(CaptureSettings, "vision")
    events = load_or_exit(EventsSettings, "vision")
    http = load_or_exit(HttpSettings, "vision")
    try:
        check_token_file(http.auth_tokens_file)
        plan = plan_memory(settings, http, capture, settings.memory_limit_bytes or container_memory_limit())
    except TokenFileError as exc:
        print(f"korall vision: invalid configuration: AUTH_TOKENS_FILE: {exc}", file=sys.stderr)
        return 2
    except MemoryPlanError as exc:
        print(f"korall vision: invalid configuration: {exc}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"num_interpreters": plan.interpreters})

    if settings.accelerator == "edgetpu":
        from .runtime import ModelLoadError, require_edgetpu

        try:
            require_edgetpu(settings)
        except ModelLoadError as exc:
            print(f"korall vision: refusing to start: {exc}", file=sys.stderr)
            return 1

    from korall_workloads.common.logs import configure_logging, redact_in_logs
    from korall_workloads.common.server import serve

    from .app import create_app

    configure_logging(settings.log_level, settings.log_json)
    logging.getLogger("korall_workloads.vision").info("memory plan: %s", plan.describe())
    password = events.mqtt_password.get_secret_value() if events.mqtt_password else None
    redact_in_logs(sources=[capture.source], passwords=[password])
    app = create_app(settings, capture=capture, events_settings=events, http=http)
    serve(app, settings.host, settings.port, http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
