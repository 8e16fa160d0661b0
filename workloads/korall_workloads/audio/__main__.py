"""`python -m korall_workloads.audio`: read the configuration, then serve (uvloop + httptools, guarded: common.server).

A bad configuration (a token file that does not parse included) prints one line naming the variable and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    from korall_workloads.common.event_settings import EventsSettings
    from korall_workloads.common.http_settings import HttpSettings
    from korall_workloads.common.settings import load_or_exit

    from .settings import AudioSettings

    settings = load_or_exit(AudioSettings, "audio")
    events = load_or_exit(EventsSettings, "audio")
    http = load_or_exit(HttpSettings, "audio")

    from korall_workloads.audio.app import create_app
    from korall_workloads.common.auth import TokenFileError, check_token_file
    from korall_workloads.common.logs import configure_logging, redact_in_logs
    from korall_workloads.common.server import serve

    try:
        check_token_file(http.auth_tokens_file)
    except TokenFileError as exc:
        print(f"korall audio: invalid configuration: AUTH_TOKENS_FILE: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    redact_in_logs(passwords=[events.mqtt_password.get_secret_value() if events.mqtt_password else None])
    app = create_app(settings, events_settings=events, http=http)
    serve(app, settings.host, settings.port, http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
