"""Entry point: `python -m korall_operator` (see main.py)."""

from korall_operator.main import main

main()
