"""`python -m korall_workloads.audio`: read the configuration, then serve.

A bad configuration prints one line naming the variable and exits with status 2, without a traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    from korall_workloads.common.event_settings import EventsSettings
    from korall_workloads.common.settings import load_or_exit

    from .settings import AudioSettings

    settings = load_or_exit(AudioSettings, "audio")
    events = load_or_exit(EventsSettings, "audio")

    import uvicorn

    from korall_workloads.audio.app import create_app
    from korall_workloads.common.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings, events_settings=events), host=settings.host, port=settings.port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
