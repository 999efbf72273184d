"""Names a /start writes: on the Sandbox, and on its session-key Secret (the claim of the session).

The Sandbox API's own names come from `kubehands.crd.constants`; these are the gateway's, shared here because
the derivation (`objects`) writes them and the gateway reads them back.
"""

from kubehands.crd.constants import DEFAULT_SESSION_KEY_SECRET_KEY as SESSION_KEY_SECRET_KEY
from kubehands.crd.constants import GROUP

__all__ = [
    "ANNOTATION_MAX_RUNNING",
    "ANNOTATION_SESSION_ID",
    "LABEL_RUNTIME_ID",
    "LABEL_SESSION_KEY",
    "MANAGED_BY_GATEWAY",
    "RUNTIME_ID_PREFIX",
    "RUNTIME_ID_RANDOM_LEN",
    "SESSION_KEY_SECRET_KEY",
    "SESSION_KEY_SECRET_PREFIX",
]

LABEL_SESSION_KEY = f"{GROUP}/session-key"  # "true" on every session-key (claim) Secret
LABEL_RUNTIME_ID = f"{GROUP}/runtime-id"
ANNOTATION_SESSION_ID = f"{GROUP}/session-id"
# On a Sandbox: its owner key's running limit when the gateway last wrote it (/start, /resume, re-/start);
# the router, which reads no API keys in router-only deployments, checks wakes against it.
ANNOTATION_MAX_RUNNING = f"{GROUP}/max-running"
MANAGED_BY_GATEWAY = "kubehands-gateway"

SESSION_KEY_SECRET_PREFIX = "kh-session-"
RUNTIME_ID_PREFIX = "kh-"
RUNTIME_ID_RANDOM_LEN = 12
