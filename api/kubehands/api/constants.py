"""Names the gateway uses. The Sandbox API's come from `kubehands.crd.constants` (their single
source); the gateway-only ones (API-key and session-key Secrets) are defined here."""

from kubehands.crd.constants import (
    API_VERSION,
    COMPONENT_SESSION,
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_PART_OF,
    LABEL_SESSION,
    PART_OF,
)
from kubehands.crd.constants import DEFAULT_SESSION_KEY_SECRET_KEY as SESSION_KEY_SECRET_KEY

__all__ = [
    "API_VERSION",
    "COMPONENT_SESSION",
    "KIND",
    "LABEL_COMPONENT",
    "LABEL_MANAGED_BY",
    "LABEL_OWNER",
    "LABEL_PART_OF",
    "LABEL_SESSION",
    "PART_OF",
    "SESSION_KEY_SECRET_KEY",
]

# Gateway-owned Secrets.
LABEL_API_KEY = f"{GROUP}/api-key"  # "true" on every API-key Secret
LABEL_KEY_NAME = f"{GROUP}/key-name"
LABEL_SESSION_KEY = f"{GROUP}/session-key"  # "true" on every session-key (claim) Secret
LABEL_RUNTIME_ID = f"{GROUP}/runtime-id"
ANNOTATION_SESSION_ID = f"{GROUP}/session-id"
# On a Sandbox: its owner key's running limit when the gateway last wrote it (/start, /resume, re-/start);
# the router, which reads no API keys in router-only deployments, checks wakes against it.
ANNOTATION_MAX_RUNNING = f"{GROUP}/max-running"
MANAGED_BY_GATEWAY = "kubehands-gateway"
COMPONENT_API_KEY = "api-key"

API_KEY_SECRET_PREFIX = "kh-apikey-"
SESSION_KEY_SECRET_PREFIX = "kh-session-"
RUNTIME_ID_PREFIX = "kh-"
RUNTIME_ID_RANDOM_LEN = 12
