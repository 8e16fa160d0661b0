"""Tools for the consumers of korall events: `python -m korall_workloads.events tail` (see tail.py).

Neither service imports this package; it needs only paho-mqtt (the `service` extra) and the payload names.
"""
