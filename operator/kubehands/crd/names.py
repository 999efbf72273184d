"""Names of children and label-safe values. Treat the templates as API: changing one orphans PVCs."""

import hashlib
import re

POD_NAME_TEMPLATE = "{sandbox}"
WORKSPACE_PVC_NAME_TEMPLATE = "{sandbox}-workspace"

# A Pod name becomes the pod's hostname, a DNS label (≤63), and the longest child suffix must
# still fit. The gateway's ids (`kh-` + 12 base36) are far shorter.
_LONGEST_SUFFIX = max(len(t.replace("{sandbox}", "")) for t in (POD_NAME_TEMPLATE, WORKSPACE_PVC_NAME_TEMPLATE))
MAX_SANDBOX_NAME_LENGTH = 63 - _LONGEST_SUFFIX

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_LABEL_VALUE_LENGTH = 63


def pod_name(sandbox: str) -> str:
    return POD_NAME_TEMPLATE.format(sandbox=sandbox)


def workspace_pvc_name(sandbox: str) -> str:
    return WORKSPACE_PVC_NAME_TEMPLATE.format(sandbox=sandbox)


def is_valid_sandbox_name(name: str) -> bool:
    return len(name) <= MAX_SANDBOX_NAME_LENGTH and re.fullmatch(DNS_LABEL_PATTERN, name) is not None


def is_valid_label_value(value: str) -> bool:
    return len(value) <= MAX_LABEL_VALUE_LENGTH and _LABEL_VALUE.fullmatch(value) is not None


def label_value(value: str) -> str:
    """`value` itself when it is a valid label value, else a readable slug plus 8 hex of its sha256.

    The hash suffix keeps two different inputs with the same slug apart.
    """
    if is_valid_label_value(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    slug = _LABEL_UNSAFE.sub("-", value)[: MAX_LABEL_VALUE_LENGTH - 9].strip("-_.")
    return f"{slug}-{digest}" if slug else digest


def session_label(session_id: str) -> str:
    """The `kubehands.dev/session` label value: always a hash, since a session id may be any string.

    32 hex characters (128 bits) of sha256: a stable, collision-safe key for label selectors.
    """
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]
