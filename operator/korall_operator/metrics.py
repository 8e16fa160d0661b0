"""The operator's Prometheus endpoint: `GET /metrics` of prometheus-client's default registry, served by aiohttp in
the operator's own event loop (no extra thread), on `metrics_port`. kopf's liveness endpoint is separate.

What it shows: the alerting's metrics (alerting/metrics.py), the presigned-link counters (presign.py), and the
Python process (memory, CPU, open files).
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

logger = logging.getLogger("korall.metrics")


async def _metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def serve(port: int, host: str = "0.0.0.0") -> web.AppRunner | None:
    """Start serving /metrics; stop it with `await runner.cleanup()`. None when the port cannot be had (logged: the
    operator reconciles without its metrics rather than not at all)."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        logger.error(f"metrics endpoint not started on port {port}: {e}")
        return None
    logger.info(f"metrics on http://{host}:{port}/metrics")
    return runner
