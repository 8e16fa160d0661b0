"""Failure alerts in real time: what the operator knows of its resources, mailed once, grouped, and again when
resolved (docs/alerting.md).

Layers, outermost first (`.importlinter`):

- `service`: the one background task (started by handlers/lifecycle.py beside the resync loop): evaluates every
  resource the indexes know, every second, feeds the grouping engine, sends what is due, persists what was sent;
- `store` (the state ConfigMap and the SMTP Secret, through k8s.py), `smtp` (a blocking send over the standard
  library's smtplib, run in a thread), `mail` (a notification rendered as an e-mail), `metrics`;
- `grouping`: the pure state machine with Alertmanager's group_wait / group_interval / repeat_interval;
- `rules`: pure, a resource's status -> the alerts it fires; `policy`: keys, severities and timers.

Nothing here writes a resource's status or decides a condition: alerts are read from the conditions that
status.py computes, so what a mail says and what `kubectl describe` says never disagree.
"""
