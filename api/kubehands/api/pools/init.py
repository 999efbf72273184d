"""What a claimed warm-pool member's dormant agent server is told: the environment a cold pod of the session would
see (`pod_environment`) and the body of its `POST /api/init` (`init_request`).

Pure functions; `warm_start.py` posts the body.
"""

import json
from collections.abc import Mapping
from typing import Any

from kubehands.crd.constants import (
    DEFAULT_PORTS,
    ENV_FIXED,
    ENV_PORTS,
    ENV_RUNTIME_ID,
    ENV_SECRET_KEY,
    ENV_SESSION_KEYS,
    MANAGED_ENV,
)
from kubehands.spec.pools import (
    CORS_ORIGINS_PREFIX,
    ENV_BASH_EVENTS_DIR,
    ENV_CONVERSATIONS_PATH,
    WEBHOOK_FIELDS,
    WEBHOOKS_PREFIX,
)

Obj = dict[str, Any]


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' expansion of an env value: `$(NAME)` of a variable defined before it becomes its value, `$$`
    becomes `$`, anything else stays (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out: list[str] = []
    i, checkpoint = 0, 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            out.append(value[checkpoint:i])
            following = value[i + 1]
            advance = 1
            if following == "$":
                out.append("$")
            elif following == "(":
                close = value.find(")", i + 2)
                if close == -1:
                    out.append("$(")
                else:
                    name = value[i + 2 : close]
                    out.append(defined[name] if name in defined else f"$({name})")
                    advance = close - i
            else:
                out.append("$" + following)
            i += advance
            checkpoint = i + 1
        i += 1
    return "".join(out) + value[checkpoint:]


def pod_environment(spec: Mapping[str, Any], runtime_id: str, session_key: str) -> dict[str, str]:
    """The environment the operator would give a cold pod of `spec` named `runtime_id`, expanded as Kubernetes
    does: its own variables first (the session key, the runtime id, the ports), then `spec.env` in order."""
    ports = {
        str(p.get("name")): p.get("containerPort")
        for p in spec.get("ports") or [{"name": n, "containerPort": p} for n, p in DEFAULT_PORTS]
    }
    defined: dict[str, str] = dict.fromkeys((*ENV_SESSION_KEYS, ENV_SECRET_KEY), session_key)
    defined[ENV_RUNTIME_ID] = runtime_id
    defined |= {var: str(ports[port]) for var, port in ENV_PORTS.items() if ports.get(port) is not None}
    defined |= ENV_FIXED
    for entry in spec.get("env") or []:
        name = str(entry.get("name") or "")
        if name and name not in MANAGED_ENV:
            defined[name] = expand(str(entry.get("value") or ""), defined)
    return defined


def _typed(kind: type, raw: str) -> Any:
    """A webhook field parsed as the agent server's environment parser would; unparsable values are passed as
    they are, for the server to refuse (as it would refuse them at a cold boot)."""
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is dict:
            return json.loads(raw)
    except ValueError:
        return raw
    return raw


def init_request(session_key: str, env: Mapping[str, str]) -> Obj:
    """The body of the dormant agent server's POST /api/init for a session: its key (as the session key and as the
    server's secret key, as a cold pod gets it) and the pod environment a cold start would have (`pod_environment`).

    The agent server's own list settings are read as its environment parser reads them at boot, by index from 0
    until the first missing one: `OH_WEBHOOKS_<n>_<FIELD>` become `webhooks`, `OH_ALLOW_CORS_ORIGINS_<n>`
    `allow_cors_origins`; `OH_CONVERSATIONS_PATH` and `OH_BASH_EVENTS_DIR` their fields. Everything else goes to
    `env` (the server's `os.environ.update`, so the tools and shells it starts see it), the session key variables
    included: the dormant process still has the member's throw-away key in them.
    """
    rest = dict(env)
    body: Obj = {"session_api_keys": [session_key], "secret_key": session_key}
    webhooks: list[Obj] = []
    while True:
        prefix = f"{WEBHOOKS_PREFIX}_{len(webhooks)}_"
        fields = {f: rest.pop(prefix + f) for f in WEBHOOK_FIELDS if prefix + f in rest}
        if not fields:
            break
        webhooks.append({f.lower(): _typed(WEBHOOK_FIELDS[f], raw) for f, raw in fields.items()})
    if webhooks:
        body["webhooks"] = webhooks
    origins: list[str] = []
    while f"{CORS_ORIGINS_PREFIX}_{len(origins)}" in rest:
        origins.append(rest.pop(f"{CORS_ORIGINS_PREFIX}_{len(origins)}"))
    if origins:
        body["allow_cors_origins"] = origins
    if ENV_CONVERSATIONS_PATH in rest:
        body["conversations_path"] = rest.pop(ENV_CONVERSATIONS_PATH)
    if ENV_BASH_EVENTS_DIR in rest:
        body["bash_events_dir"] = rest.pop(ENV_BASH_EVENTS_DIR)
    rest |= dict.fromkeys((*ENV_SESSION_KEYS, ENV_SECRET_KEY), session_key)
    body["env"] = rest
    return body
