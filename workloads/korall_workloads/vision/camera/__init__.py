"""Camera ingest for the vision service: source -> every-Nth sampler -> drop-oldest ring -> shared detector.

Modules, from the device up: `settings` (the CAPTURE_* environment), `source` (the only module that talks
to cameras, streams and files), `ring` (the bounded hand-over), `state` (the camera state machine),
`metrics` (Prometheus), `pipeline` (the two threads; live-stream fan-out is `common.broadcast`), `snapshot`
(drawing), `routes` (HTTP and the lifespan hook). A video that stands in for a camera: `korall_tools.demo_video`.
"""

from .pipeline import CameraPipeline, Detector, FrameResult
from .routes import camera_lifespan, camera_status, require_camera_ready, router, run_camera
from .settings import CaptureSettings
from .state import CameraState

__all__ = [
    "CameraPipeline",
    "CameraState",
    "CaptureSettings",
    "Detector",
    "FrameResult",
    "camera_lifespan",
    "camera_status",
    "require_camera_ready",
    "router",
    "run_camera",
]
