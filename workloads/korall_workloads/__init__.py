"""korall's edge workloads: the vision service and the audio service.

Each subpackage is one deployable with its own extra in pyproject (`vision`, `audio`); `common` holds what
both need (JSON errors, logging). Nothing here imports the operator: configuration arrives through the
environment variables named in `korall_contract`.
"""
