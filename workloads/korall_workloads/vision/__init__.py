"""The vision workload: SSD MobileNet v2 object detection over HTTP (port 5052), Edge TPU or CPU.

Layout, outside in (`.importlinter` enforces it): `app` (HTTP routes, metrics) with `camera`, `upload` and
`schemas` beside it -> `detector` (one model shared by /infer and the camera loop: load, status, detect) ->
`inference` (the interpreter's job queue), `workers` (the decode threads), `preprocess` and `postprocess` (pure
image and tensor functions), `runtime` (LiteRT and libedgetpu: which file runs where) -> `catalog` (model files,
manifest, checksums, labels) and `settings` (the one place that reads the environment). Errors map to responses
in `common.responses`.
"""
