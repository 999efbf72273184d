"""The rule whether a warm pool's template serves a /start: `difference` between a template and the Sandbox spec the
/start derives (`objects.build_sandbox`).

Pure functions over API JSON dicts. The gateway claims a member only when they match
(`kubehands.api.pools.claims`); the operator reports templates no /start can match (`pool_match`).
"""

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubehands.crd.constants import (
    DEFAULT_WORKSPACE_MOUNT_PATH,
    DEFAULT_WORKSPACE_SIZE,
    ENV_DEFERRED_INIT,
    MANAGED_ENV,
)

Obj = dict[str, Any]

# The variables a dormant member can only have been booted with. The image's entrypoint (VNC, VS Code) and the
# agent server read them at start, so POST /api/init cannot change them: a request must want the template's value.
BOOT_ONLY_ENV = frozenset(
    (
        "OH_ENABLE_VNC",
        "OPENVSCODE_SERVER_ROOT",
        "OH_VSCODE_BASE_PATH",
        "OPENVSCODE_SERVER_BASE_PATH",
        "OH_PRELOAD_TOOLS",
    )
)
# The agent server reads its whole configuration from `OH_*` variables once, at boot. Of those, POST /api/init
# carries only the ones below; any other `OH_*` variable is boot-only as well.
AGENT_SERVER_PREFIX = "OH_"
ENV_CONVERSATIONS_PATH = "OH_CONVERSATIONS_PATH"
ENV_BASH_EVENTS_DIR = "OH_BASH_EVENTS_DIR"
WEBHOOKS_PREFIX = "OH_WEBHOOKS"
CORS_ORIGINS_PREFIX = "OH_ALLOW_CORS_ORIGINS"
# The agent server's WebhookSpec fields as its environment parser reads them (`OH_WEBHOOKS_<n>_<FIELD>`), with
# the type it parses each value to (openhands-agent-server 1.58.2, `config.WebhookSpec`).
WEBHOOK_FIELDS: dict[str, type] = {
    "BASE_URL": str,
    "EVENT_BUFFER_SIZE": int,
    "HEADERS": dict,
    "FLUSH_DELAY": float,
    "NUM_RETRIES": int,
    "RETRY_DELAY": int,
    "MAX_QUEUE_SIZE": int,
    "MAX_BATCH_BYTES": int,
    "MAX_QUEUE_BYTES": int,
}
_INDEXED_WEBHOOK = re.compile(rf"^{WEBHOOKS_PREFIX}_(0|[1-9][0-9]*)_([A-Z_]+)$")
_INDEXED_ORIGIN = re.compile(rf"^{CORS_ORIGINS_PREFIX}_(0|[1-9][0-9]*)$")

# A pool member's Secret (its throw-away session key, which is also its init key): `<member>-init`. The operator
# makes it; a claim reads it, checks it (`kubehands.api.pools.claims.forgery`) and deletes it.
MEMBER_SECRET_SUFFIX = "-init"


def member_secret_name(member: str) -> str:
    return f"{member}{MEMBER_SECRET_SUFFIX}"


# The pod-shaping fields of a Sandbox spec that a pool template carries, in the order they are compared.
TEMPLATE_FIELDS = (
    "image",
    "command",
    "workingDir",
    "resources",
    "runtimeClassName",
    "securityContext",
    "imagePullPolicy",
    "workspace",
    "nodeSelector",
    "tolerations",
)


# ---- the rule ---------------------------------------------------------------------------------------------


def init_carried(name: str) -> bool:
    """A variable POST /api/init delivers itself (rather than through its `env`)."""
    if name in (ENV_CONVERSATIONS_PATH, ENV_BASH_EVENTS_DIR) or _INDEXED_ORIGIN.match(name):
        return True
    webhook = _INDEXED_WEBHOOK.match(name)
    return webhook is not None and webhook.group(2) in WEBHOOK_FIELDS


def boot_only(name: str) -> bool:
    """A variable a warm member cannot take on after boot (`BOOT_ONLY_ENV`, or agent-server configuration that
    POST /api/init does not carry)."""
    return name in BOOT_ONLY_ENV or (name.startswith(AGENT_SERVER_PREFIX) and not init_carried(name))


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_NUMBER = re.compile(r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))")


def quantity_value(quantity: Any) -> Decimal | str:
    """A Kubernetes quantity as its value (`1Gi` and `1024Mi` are equal); anything unreadable stays as given."""
    text = str(quantity)
    number = _NUMBER.match(text)
    if number is None:
        return text
    value, suffix = Decimal(number.group(0)), text[number.end() :]
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL_SUFFIX:
        return value.scaleb(_DECIMAL_SUFFIX[suffix])
    if suffix[:1] in ("e", "E"):
        try:
            return value.scaleb(int(suffix[1:]))
        except ValueError:
            return text
    return text


def _resources(value: Any) -> dict[str, dict[str, Decimal | str]]:
    sections = value if isinstance(value, Mapping) else {}
    return {
        section: {name: quantity_value(q) for name, q in (entries or {}).items()}
        for section, entries in sections.items()
        if entries
    }


def _workspace(value: Any) -> dict[str, Any]:
    workspace = value if isinstance(value, Mapping) else {}
    return {
        "size": quantity_value(workspace.get("size") or DEFAULT_WORKSPACE_SIZE),
        "mountPath": workspace.get("mountPath") or DEFAULT_WORKSPACE_MOUNT_PATH,
        "storageClassName": workspace.get("storageClassName") or None,
    }


def _without_nulls(value: Any) -> dict[str, Any]:
    return {k: v for k, v in (value or {}).items() if v is not None} if isinstance(value, Mapping) else {}


def _normalised(field: str, value: Any) -> Any:
    """A field's value with the spellings that mean the same pod made equal (unset, empty, defaulted)."""
    if field == "resources":
        return _resources(value)
    if field == "workspace":
        return _workspace(value)
    if field in ("securityContext", "nodeSelector"):
        return _without_nulls(value)
    if field == "tolerations":
        return [_without_nulls(t) for t in value or []]
    return value or None  # image, command, workingDir, runtimeClassName, imagePullPolicy


def env_map(env: Any) -> dict[str, str]:
    """`spec.env` as a dict, without the operator's own variables (it ignores them in a spec)."""
    return {
        str(e["name"]): str(e.get("value") or "")
        for e in env or []
        if isinstance(e, Mapping) and e.get("name") and e["name"] not in MANAGED_ENV
    }


def difference(template: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    """The first field in which a member booted from `template` differs from the pod a cold start of `spec` (the
    Sandbox spec /start derives, runtime id written as `$(RUNTIME_ID)`) would get; None when they match.

    Every pod-shaping field must be equal; every template variable must be in the spec with the same value (the
    spec may add variables: POST /api/init delivers them), except boot-only ones (`boot_only`), which the spec may
    not add or change. A spec with extra volumes never matches (a member has none).
    """
    for field in TEMPLATE_FIELDS:
        if _normalised(field, template.get(field)) != _normalised(field, spec.get(field)):
            return field
    if spec.get("volumes"):
        return "volumes"
    booted = env_map(template.get("env"))
    booted.pop(ENV_DEFERRED_INIT, None)  # the operator adds it to every member; never part of a request
    wanted = env_map(spec.get("env"))
    for name, value in booted.items():
        if wanted.get(name) != value:
            return f"env.{name}"
    for name in wanted:
        if name not in booted and boot_only(name):
            return f"env.{name}"
    return None


def matches(template: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    return difference(template, spec) is None


def template_from_spec(spec: Mapping[str, Any]) -> Obj:
    """The pool template whose members serve /starts that derive `spec` (what `difference` compares)."""
    return {field: spec[field] for field in (*TEMPLATE_FIELDS, "env") if spec.get(field) is not None}
