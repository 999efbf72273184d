"""The settings that shape a Sandbox spec, read from `KUBEHANDS_*` environment variables (pydantic-settings).

The gateway's `Settings` extends them (docs/gateway.md documents every field); the operator reads these alone, from
the same variables, to check that a pool template can match a /start (`pool_match_check`).
"""

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubehands.crd.constants import DEFAULT_WORKSPACE_MOUNT_PATH, DEFAULT_WORKSPACE_SIZE
from kubehands.crd.model import MAX_LIFETIME_SECONDS
from kubehands.crd.resources import DEFAULT_BASE_RESOURCES, validate_base_resources

# Port mode: each sandbox's ports, in this order: agent server, VS Code, work-1, work-2 (as Docker's runtime maps them).
PORTS_PER_SANDBOX = 4
LOOPBACK_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")


class SpecSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEHANDS_", extra="ignore")

    # --- Kubernetes ---------------------------------------------------------------------------
    namespace: str = Field("default", description="Namespace where Sandboxes and session-key Secrets live.")

    # --- URLs and routing ---------------------------------------------------------------------
    public_url: str = Field(
        "http://localhost:8000",
        description="Public base URL of the router in path mode; sandbox url = {public_url}/{runtime_id}. In port "
        "mode its scheme and host are those of the sandbox URLs.",
    )
    routing_mode: Literal["path", "subdomain", "port"] = Field(
        "path",
        description="`path`, `subdomain` or `port`. Port mode gives each sandbox its own block of gateway ports "
        "(`sandbox_ports`): sandbox url = {public_url scheme and host}:{port}, which every client reaches with no DNS "
        "(one gateway replica only; docs/gateway.md#port-mode).",
    )
    sandbox_ports: str = Field(
        "20000-20399",
        description="Port mode: the range `first-last` of gateway ports for sandboxes, 4 per sandbox (agent server, "
        "VS Code, work-1, work-2), so it holds (last - first + 1) // 4 sandboxes, paused ones included.",
    )
    sandbox_loopback: str | None = Field(
        None,
        description="Port mode: serve each sandbox on a loopback address of its own, this IPv4 address plus the "
        "sandbox's slot (e.g. 127.1.0.1: 127.1.0.1, 127.1.0.2, ...), in the URLs handed out and in the sockets "
        "the gateway listens on, instead of the host of public_url. Browsers scope cookies by host, not port: "
        "with one host per sandbox, one sandbox's cookies (VS Code's vscode-tkn, the session key) never reach "
        "another. Unset: every sandbox on public_url's host (the setting for port mode behind a host name).",
    )
    domain: str | None = Field(
        None,
        description="Subdomain mode: wildcard DNS domain (optionally with :port); "
        "sandbox url = {scheme}://{runtime_id}.{domain}.",
    )
    subdomain_scheme: Literal["http", "https"] = Field("https", description="Subdomain mode: URL scheme.")

    # --- Sandbox defaults ---------------------------------------------------------------------
    base_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_BASE_RESOURCES.items()},
        description='Requests/limits at resource_factor 1, as JSON `{"requests": {...}, "limits": {...}}`. '
        "Same variable and default as the operator's.",
    )
    resource_factors: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8], description="Accepted values of `resource_factor`."
    )
    workspace_size: str = Field(DEFAULT_WORKSPACE_SIZE, description="Size of each sandbox's workspace PVC.")
    workspace_storage_class: str | None = Field(None, description="StorageClass of the workspace PVC.")
    workspace_mount_path: str = Field(
        DEFAULT_WORKSPACE_MOUNT_PATH, description="Where the workspace PVC is mounted."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Default imagePullPolicy when the request sends none."
    )
    runtime_class_map: dict[str, str] = Field(
        default_factory=dict,
        description='Requested runtime class -> RuntimeClass, as JSON (same variable as the operator\'s, e.g. '
        '{"sysbox-runc": "", "gvisor": "gvisor"}). When not empty, a /start naming a class that is not a key '
        "is refused (422) instead of silently running under the default runtime.",
    )
    default_runtime_class: str | None = Field(
        None, description="Runtime class of a /start that names none; must be a key of runtime_class_map."
    )
    require_runtime_class: bool = Field(
        False,
        description="Refuse (422) a /start whose class (requested, else the default) is missing or not a key of "
        "runtime_class_map.",
    )
    inject_url_env: bool = Field(
        True,
        description="Set RUNTIME_URL (path and subdomain modes), and in path mode OH_VSCODE_BASE_PATH / "
        "OPENVSCODE_SERVER_BASE_PATH = /{runtime_id}/vscode, in every sandbox.",
    )

    # --- Keys and tenancy ---------------------------------------------------------------------
    default_max_running: int = Field(10, description="Running-sandbox limit for keys without their own.")
    default_max_lifetime_seconds: int = Field(
        0,
        ge=0,
        le=MAX_LIFETIME_SECONDS,
        description="spec.maxLifetimeSeconds of every sandbox a /start creates: the operator deletes it this long "
        "after its creation (or warm-pool claim), whatever its state. A key's profile may lower it "
        "(maxLifetimeSeconds). 0: no limit (idle culling and the paused TTL still apply).",
    )

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value

    @field_validator("default_runtime_class")
    @classmethod
    def _no_empty_class(cls, value: str | None) -> str | None:
        return value or None  # an empty variable means "no default class"

    @field_validator("base_resources")
    @classmethod
    def _quantities(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        validate_base_resources(value)
        return value

    @field_validator("resource_factors")
    @classmethod
    def _factors(cls, value: list[int]) -> list[int]:
        if not value or any(f < 1 for f in value):
            raise ValueError("resource_factors must be a non-empty list of positive integers")
        return value

    @field_validator("sandbox_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @field_validator("sandbox_loopback")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty variable means "every sandbox on public_url's host"
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValueError(
                f"sandbox_loopback must be an IPv4 loopback address such as 127.1.0.1, got {value!r}"
            ) from None
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"sandbox_loopback must be an IPv4 loopback address (127.0.0.0/8), got {value!r}")
        return str(address)

    @model_validator(mode="after")
    def _check(self) -> "SpecSettings":
        if self.routing_mode == "subdomain" and not self.domain:
            raise ValueError("KUBEHANDS_DOMAIN is required in subdomain routing mode")
        if self.routing_mode == "port":
            first, last = self.port_range
            public_port = urlsplit(self.public_url).port
            if public_port is not None and first <= public_port <= last:
                raise ValueError("KUBEHANDS_SANDBOX_PORTS must not contain the port of KUBEHANDS_PUBLIC_URL")
            if self.sandbox_loopback:
                _check_loopback_range(self.sandbox_loopback, (last - first + 1) // PORTS_PER_SANDBOX, self.public_url)
        # Either mistake would refuse every /start; say so at startup instead (the chart refuses both too).
        if self.default_runtime_class and self.default_runtime_class not in self.runtime_class_map:
            raise ValueError("KUBEHANDS_DEFAULT_RUNTIME_CLASS must be a key of KUBEHANDS_RUNTIME_CLASS_MAP")
        if self.require_runtime_class and not self.runtime_class_map:
            raise ValueError("KUBEHANDS_REQUIRE_RUNTIME_CLASS needs a non-empty KUBEHANDS_RUNTIME_CLASS_MAP")
        if self.domain:
            self.domain = self.domain.strip(".").lower()
        return self

    @property
    def port_range(self) -> tuple[int, int]:
        """Port mode: (first, last) of `sandbox_ports`."""
        return parse_port_range(self.sandbox_ports)


def _check_loopback_range(first: str, slots: int, public_url: str) -> None:
    """One loopback address per slot, all inside 127.0.0.0/8, none of them public_url's own host (the control API,
    and beside it the OpenHands app, whose cookies a sandbox must not get either)."""
    addresses = int(LOOPBACK_NETWORK.broadcast_address) - int(ipaddress.IPv4Address(first))
    if slots > addresses:
        raise ValueError(
            f"KUBEHANDS_SANDBOX_LOOPBACK {first} leaves room for {addresses} sandboxes in 127.0.0.0/8, and "
            f"KUBEHANDS_SANDBOX_PORTS holds {slots}: choose a lower first address"
        )
    host = urlsplit(public_url).hostname or ""
    try:
        public = ipaddress.ip_address(host)
    except ValueError:
        return
    if public.version == 4 and 0 <= int(public) - int(ipaddress.IPv4Address(first)) < slots:
        raise ValueError(
            f"KUBEHANDS_SANDBOX_LOOPBACK: the sandboxes' addresses from {first} on must not include the host of "
            f"KUBEHANDS_PUBLIC_URL ({host})"
        )


def parse_port_range(value: str) -> tuple[int, int]:
    """`first-last` -> (first, last): TCP ports, room for at least one sandbox (PORTS_PER_SANDBOX ports)."""
    first_text, sep, last_text = value.partition("-")
    if not sep or not first_text.strip().isdigit() or not last_text.strip().isdigit():
        raise ValueError(f"sandbox_ports must be `first-last`, e.g. 20000-20399, got {value!r}")
    first, last = int(first_text), int(last_text)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"sandbox_ports must be ports 1-65535 with first <= last, got {value!r}")
    if last - first + 1 < PORTS_PER_SANDBOX:
        raise ValueError(f"sandbox_ports must hold at least {PORTS_PER_SANDBOX} ports (one sandbox), got {value!r}")
    return first, last
