"""`python -m korall_workloads.events tail --broker mqtt://host:1883`: see tail.py."""

from __future__ import annotations

import sys

from .tail import main

if __name__ == "__main__":
    sys.exit(main())
