"""Prometheus metrics of one vision app, on its own registry (several apps in one process never clash).

Requests are counted by route template (never the raw path, so a scan of random URLs cannot blow up the
series count) and status by a small pure-ASGI middleware, which costs far less per request than Starlette's
BaseHTTPMiddleware.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INVOKE_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)


class VisionMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "korall_vision_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.errors = Counter("korall_vision_errors", "Error replies by error code", ["code"], registry=self.registry)
        self.invoke_seconds = Histogram(
            "korall_vision_invoke_seconds", "Interpreter invoke time", buckets=INVOKE_BUCKETS, registry=self.registry
        )
        self.request_seconds = Histogram(
            "korall_vision_infer_seconds", "POST /infer time from body received to reply", registry=self.registry
        )
        self.model_info = Info("korall_vision_model", "The loaded model", registry=self.registry)
        self.model_ready = Gauge(
            "korall_vision_model_ready", "1 once the model is loaded and warm", registry=self.registry
        )

    def on_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()


class RequestCounter:
    """Pure ASGI middleware: count each HTTP response by route template and status."""

    def __init__(self, app: ASGIApp, metrics: VisionMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(route=name, status=str(status["code"])).inc()
