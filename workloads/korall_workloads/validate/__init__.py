"""The model validator: judges one model file before the operator lets it serve in production.

`python -m korall_workloads.validate` is the container of the operator's validation Job (docs/catalog.md). It runs
from the vision image, on the vision service's own code (the same loader, interpreter and decoding), and ends with
one compact JSON object in its termination message, which the operator records in the InferenceModel's status
under the model's sha256. Layout, outside in: `__main__` (exit code, termination message) -> `checks` (the steps:
checksum, structure, the golden set on the model or its CPU twin) -> `structure` (what the file declares: custom
ops, tensors, classes; no interpreter run) and `result` (the JSON, kept under 4096 bytes); `settings` reads the
environment (korall_contract.ValidateEnv).
"""
