"""Prometheus metrics of one vision app, on its own registry (several apps in one process never clash).

Requests are counted by route template (never the raw path, so a scan of random URLs cannot blow up the
series count) and status, told by the HTTP guard (`common.guard`: `on_response`), which already sees every reply:
no middleware of its own, whose layer would cost on every request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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

    def count_response(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
