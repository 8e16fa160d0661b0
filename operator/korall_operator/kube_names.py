"""Kubernetes' own rules for the free-form maps of the specs (nodeSelector, resources), and their size bounds.

A map the CRDs left unbounded let a CR grow past what kopf can record: kopf keeps the last spec it handled in an
annotation, and a 360 KB nodeSelector overflowed the API server's 256 KB limit for annotations, so every handling
failed and was retried for ever. The CRDs now bound every map (`maxProperties`, `maxLength` of the values) and check
the keys with a CEL rule, in the words below; the spec models hold to the same bounds and messages
(tests/operator/test_crds.py compares them). The key rule is the API server's own for label keys and resource names
(a qualified name): a bad key was refused only later, with the pod template (ChildRejected).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = [
    "MAX_QUANTITY_LENGTH",
    "MAX_RESOURCES",
    "MAX_SELECTOR_LABELS",
    "NODE_SELECTOR_KEYS",
    "RESOURCE_NAMES",
    "LabelValue",
    "NodeSelector",
    "is_qualified_name",
]

MAX_SELECTOR_LABELS = 64
MAX_RESOURCES = 32  # names in requests, and again in limits
MAX_QUANTITY_LENGTH = 64

# Anchored, explicit classes: the same in RE2 (the API server's CEL `matches`) and in Python's `re.fullmatch`.
_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_QUALIFIED_NAME_LENGTHS = re.compile(r"^([^/]{1,253}/)?[^/]{1,63}$")  # prefix <= 253, name <= 63: 317 in all
LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

NODE_SELECTOR_KEYS = (
    "nodeSelector keys must be label keys: an optional DNS subdomain prefix of at most 253 characters and '/', "
    "then a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends alphanumeric"
)
RESOURCE_NAMES = (
    "resources: every name in requests and limits must be a resource name (cpu, memory, example.com/device): an "
    "optional DNS subdomain prefix of at most 253 characters and '/', then a name of at most 63 characters"
)

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_RE)]


def is_qualified_name(key: str) -> bool:
    """A label key or a resource name, as the API server checks them (`example.com/name`, `name`)."""
    return bool(_QUALIFIED_NAME.fullmatch(key) and _QUALIFIED_NAME_LENGTHS.fullmatch(key))


def _label_keys(selector: dict[str, str]) -> dict[str, str]:
    if not all(is_qualified_name(key) for key in selector):
        raise ValueError(NODE_SELECTOR_KEYS)
    return selector


NodeSelector = Annotated[dict[str, LabelValue], Field(max_length=MAX_SELECTOR_LABELS), AfterValidator(_label_keys)]
"""A nodeSelector as the CRDs admit it: at most 64 labels, keys and values as Kubernetes has them."""
