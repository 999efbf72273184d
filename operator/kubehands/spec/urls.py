"""Sandbox URLs in the three routing modes, the reverse (which sandbox port a request is for), and the
upstream address of a pod.

Port mode (docs/gateway.md#port-mode) needs no stored state: a sandbox's block of gateway ports is a hash of its
runtime id (its *slot*), and the gateway only ever gives out runtime ids whose slot is free (`kubehands.api.ports`).
With `sandbox_loopback` each slot also has a loopback address of its own, so that no two sandboxes share a host
(browsers scope cookies by host, not by port).

Pure functions, one scheme in both directions: the derivation (a Sandbox's env names its URL), the gateway's router,
its /alive check and its runtime objects share them.
"""

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubehands.crd.constants import (
    AGENT_PORT_NAME,
    DEFAULT_PORTS,
    VSCODE_PORT_NAME,
    WORK_1_PORT,
    WORK_1_PORT_NAME,
    WORK_2_PORT,
    WORK_2_PORT_NAME,
)
from kubehands.spec.constants import RUNTIME_ID_PREFIX, RUNTIME_ID_RANDOM_LEN
from kubehands.spec.settings import PORTS_PER_SANDBOX, SpecSettings

RUNTIME_ID_RE = re.compile(rf"^{re.escape(RUNTIME_ID_PREFIX)}[0-9a-z]{{{RUNTIME_ID_RANDOM_LEN}}}$")
# The sibling services, each named after its spec.ports entry.
SERVICES = (VSCODE_PORT_NAME, WORK_1_PORT_NAME, WORK_2_PORT_NAME)
# Port mode: the services of a sandbox's port block, by offset from its first port.
PORT_SERVICES = (AGENT_PORT_NAME, VSCODE_PORT_NAME, WORK_1_PORT_NAME, WORK_2_PORT_NAME)
assert len(PORT_SERVICES) == PORTS_PER_SANDBOX
# V0's action server serves its VS Code token under /vscode/; in path mode this path must reach
# the agent server, not VS Code.
_AGENT_PATHS_UNDER_VSCODE = ("/vscode/connection_token",)


def is_runtime_id(value: str) -> bool:
    return bool(RUNTIME_ID_RE.match(value))


# ---- port mode --------------------------------------------------------------------------------


def port_slots(settings: SpecSettings) -> int:
    """How many sandboxes the port range holds."""
    first, last = settings.port_range
    return (last - first + 1) // PORTS_PER_SANDBOX


def port_slot(settings: SpecSettings, runtime_id: str) -> int:
    """The slot (block of ports) of a runtime id: a hash, so that every gateway start agrees without stored state."""
    digest = hashlib.sha256(runtime_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % port_slots(settings)


def slot_port(settings: SpecSettings, slot: int, service: str = AGENT_PORT_NAME) -> int:
    return settings.port_range[0] + slot * PORTS_PER_SANDBOX + PORT_SERVICES.index(service)


def sandbox_port_numbers(settings: SpecSettings) -> range:
    """Every port the gateway listens on for sandboxes in port mode (whole blocks only)."""
    first = settings.port_range[0]
    return range(first, first + port_slots(settings) * PORTS_PER_SANDBOX)


def slot_address(settings: SpecSettings, slot: int) -> str | None:
    """Port mode: the loopback address of a slot's ports (`sandbox_loopback` + slot), or None when every sandbox
    shares public_url's host."""
    if not settings.sandbox_loopback:
        return None
    return str(ipaddress.IPv4Address(settings.sandbox_loopback) + slot)


def sandbox_listen_addresses(settings: SpecSettings, host: str) -> list[tuple[str, int]]:
    """Port mode: every (address, port) the gateway listens on for sandboxes: each slot's ports on its own loopback
    address, or all on `host` (the gateway's own) without `sandbox_loopback`."""
    return [
        (slot_address(settings, slot) or host, port)
        for slot in range(port_slots(settings))
        for port in range(slot_port(settings, slot), slot_port(settings, slot) + PORTS_PER_SANDBOX)
    ]


def match_port(settings: SpecSettings, local_port: int | None) -> tuple[int, str] | None:
    """Port mode: (slot, service) of the gateway port a request came in on; None for the control API's port."""
    if local_port is None or local_port not in sandbox_port_numbers(settings):
        return None
    offset = local_port - settings.port_range[0]
    return offset // PORTS_PER_SANDBOX, PORT_SERVICES[offset % PORTS_PER_SANDBOX]


def _port_origin(settings: SpecSettings, slot: int, service: str) -> str:
    """`{scheme}://{host}:{port}`: the slot's own loopback address, else public_url's host."""
    public = urlsplit(settings.public_url)
    host = slot_address(settings, slot) or public.hostname or "localhost"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{public.scheme}://{host}:{slot_port(settings, slot, service)}"


# ---- URLs -------------------------------------------------------------------------------------


def sandbox_url(settings: SpecSettings, runtime_id: str) -> str:
    """The runtime object's `url` (no trailing slash, docs/runtime-api.md §8.10)."""
    if settings.routing_mode == "subdomain":
        return f"{settings.subdomain_scheme}://{runtime_id}.{settings.domain}"
    if settings.routing_mode == "port":
        return _port_origin(settings, port_slot(settings, runtime_id), AGENT_PORT_NAME)
    return f"{settings.public_url}/{runtime_id}"


def service_url(settings: SpecSettings, runtime_id: str, service: str) -> str:
    """URL of a sibling service (`vscode`, `work-1`, `work-2`), as the clients derive it (port mode: the port of
    the service in the sandbox's block; only `work_hosts` hands these to clients)."""
    if settings.routing_mode == "subdomain":
        return f"{settings.subdomain_scheme}://{service}-{runtime_id}.{settings.domain}"
    if settings.routing_mode == "port":
        return _port_origin(settings, port_slot(settings, runtime_id), service)
    return f"{settings.public_url}/{runtime_id}/{service}"


def vscode_base_path(runtime_id: str) -> str:
    """Path mode: where VS Code serves from; the router forwards this prefix unstripped."""
    return f"/{runtime_id}/{VSCODE_PORT_NAME}"


def work_hosts(settings: SpecSettings, runtime_id: str) -> dict[str, int]:
    return {
        service_url(settings, runtime_id, WORK_1_PORT_NAME): WORK_1_PORT,
        service_url(settings, runtime_id, WORK_2_PORT_NAME): WORK_2_PORT,
    }


def service_port(sandbox: dict[str, Any], service: str) -> int:
    """The container port named `service` in the Sandbox's `spec.ports` (the CRD defaults otherwise)."""
    for port in (sandbox.get("spec") or {}).get("ports") or []:
        if port.get("name") == service and isinstance(port.get("containerPort"), int):
            return int(port["containerPort"])
    return dict(DEFAULT_PORTS)[service]


def upstream_base(pod_ip: str, port: int) -> str:
    """`http://{pod IP}:{port}`, the address the router and the /alive check reach a pod's port at."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip  # an IPv6 address
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class Target:
    """Where a router request goes: a sandbox, one of its ports, and the upstream path."""

    runtime_id: str
    service: str  # a spec.ports name: agent | vscode | work-1 | work-2
    path: str  # upstream path, always starting with "/"


def match_path(path: str) -> Target | None:
    """Path mode: `/{runtime_id}[/...]`. The prefix is stripped, except for VS Code, which runs
    with `--server-base-path /{runtime_id}/vscode` (OH_VSCODE_BASE_PATH) and expects the full path."""
    parts = path.split("/", 2)  # ["", id, rest]
    if len(parts) < 2 or not is_runtime_id(parts[1]):
        return None
    runtime_id = parts[1]
    rest = "/" + parts[2] if len(parts) == 3 else "/"
    for service in SERVICES:
        if rest == f"/{service}" or rest.startswith(f"/{service}/"):
            if service == VSCODE_PORT_NAME:
                if rest in _AGENT_PATHS_UNDER_VSCODE:
                    return Target(runtime_id, AGENT_PORT_NAME, rest)
                return Target(runtime_id, service, path)
            return Target(runtime_id, service, rest[len(service) + 1 :] or "/")
    return Target(runtime_id, AGENT_PORT_NAME, rest)


def match_host(host: str, domain: str, path: str) -> Target | None:
    """Subdomain mode: `{id}.{domain}`, `vscode-{id}.{domain}`, `work-1-{id}.{domain}`, ..."""
    host = host.split(":", 1)[0].lower().rstrip(".")
    suffix = "." + domain.split(":", 1)[0]  # the domain may carry a port for the URLs handed out
    if not host.endswith(suffix):
        return None
    label = host[: -len(suffix)]
    service = AGENT_PORT_NAME
    for candidate in SERVICES:
        if label.startswith(candidate + "-"):
            service, label = candidate, label[len(candidate) + 1 :]
            break
    if not is_runtime_id(label):
        return None
    return Target(label, service, path or "/")


def match(settings: SpecSettings, host: str | None, path: str) -> Target | None:
    """Path and subdomain modes (port mode routes by the port a request came in on: `match_port`)."""
    if settings.routing_mode == "subdomain":
        return match_host(host or "", settings.domain or "", path)
    if settings.routing_mode == "port":
        return None
    return match_path(path)
