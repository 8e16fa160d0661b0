"""The vision workload: SSD MobileNet v2 object detection over HTTP (port 5052), Edge TPU or CPU.

Layout, outside in: `app` (HTTP routes, errors, metrics) -> `detector` (one interpreter on one thread,
shared by /infer and the camera loop) -> `runtime` (LiteRT and libedgetpu: which file runs where) and
`catalog` (model files, manifest, checksums, labels); `preprocess` and `postprocess` are pure image and
tensor functions; `settings` is the one place that reads the environment.
"""
