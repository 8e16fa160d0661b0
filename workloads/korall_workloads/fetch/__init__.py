"""The model downloader: an init container that puts a verified model file into the node's model cache.

`python -m korall_workloads.fetch` (in the vision image) reads a link (a presigned S3 GET or a plain HTTPS URL)
and the expected sha256, and leaves the file at `<MODEL_CACHE_DIR>/sha256/<hex>` or fails with one line in the
container's termination message. Layout, outside in: `__main__` (exit codes, termination message) -> `fetcher`
(cache hit, lock, attempts with backoff, publish) -> `transfer` (one HTTP GET, resumed with Range, streamed
through the hash into the partial file) and `cache` (paths, lock file, partial file, atomic publish);
`source` reads the link and headers, `failures` names every way it can fail, `settings` reads the environment.
Standard library only (plus pydantic-settings, which the image has anyway): the pod never gets boto3 or S3
credentials, only a link. See docs/model-delivery.md.
"""
