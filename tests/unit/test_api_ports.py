"""Port mode: each sandbox's block of gateway ports, its URLs, the reverse mapping, and the choice of runtime ids
that keeps blocks unshared (docs/gateway.md#port-mode)."""

import socket

import httpx
import pytest
from pydantic import ValidationError

from kubehands.api.cli.gateway import listening_sockets
from kubehands.api.keys import KeyRecord
from kubehands.api.ports import pick_runtime_id
from kubehands.api.settings import Settings
from kubehands.spec import urls
from kubehands.spec.objects import build_environment, mint_runtime_id
from kubehands.spec.request import StartRequest

pytestmark = pytest.mark.unit

RID = "kh-0123456789ab"


def port_settings(**overrides: object) -> Settings:
    return Settings(routing_mode="port", public_url="http://127.0.0.1:8080", sandbox_ports="20000-20399", **overrides)


def test_a_sandbox_gets_a_block_of_four_ports_on_the_public_host() -> None:
    settings = port_settings()
    slot = urls.port_slot(settings, RID)
    assert 0 <= slot < urls.port_slots(settings) == 100
    base = 20000 + 4 * slot
    assert urls.sandbox_url(settings, RID) == f"http://127.0.0.1:{base}"
    assert urls.service_url(settings, RID, "vscode") == f"http://127.0.0.1:{base + 1}"
    assert urls.work_hosts(settings, RID) == {
        f"http://127.0.0.1:{base + 2}": 12000,
        f"http://127.0.0.1:{base + 3}": 12001,
    }


def test_the_block_is_a_pure_function_of_the_runtime_id() -> None:
    """No stored state: a restarted gateway hands out the same URL for the same sandbox."""
    assert urls.sandbox_url(port_settings(), RID) == urls.sandbox_url(port_settings(), RID)
    slots = {urls.port_slot(port_settings(), mint_runtime_id()) for _ in range(2000)}
    assert len(slots) == 100  # ids spread over every block


def test_the_sdk_accepts_the_url_as_its_base_url() -> None:
    """openhands-workspace asserts `httpx.Client(base_url=url).base_url == url`: false for any URL with a path."""
    url = urls.sandbox_url(port_settings(), RID)
    assert httpx.Client(base_url=url).base_url == url
    assert httpx.Client(base_url=urls.sandbox_url(Settings(public_url="http://127.0.0.1:8080"), RID)).base_url != (
        urls.sandbox_url(Settings(public_url="http://127.0.0.1:8080"), RID)
    )


def test_the_url_is_not_path_mode_for_the_clients() -> None:
    """V0 and V1-app treat a URL whose path starts with /{runtime_id} as path mode; a port URL has no path."""
    from urllib.parse import urlparse

    assert urlparse(urls.sandbox_url(port_settings(), RID)).path == ""


def test_ipv6_public_host_is_bracketed() -> None:
    settings = Settings(routing_mode="port", public_url="http://[::1]:8080", sandbox_ports="20000-20003")
    assert urls.sandbox_url(settings, RID) == "http://[::1]:20000"


def test_match_port_names_slot_and_service() -> None:
    settings = port_settings()
    assert urls.match_port(settings, 20000) == (0, "agent")
    assert urls.match_port(settings, 20005) == (1, "vscode")
    assert urls.match_port(settings, 20006) == (1, "work-1")
    assert urls.match_port(settings, 20399) == (99, "work-2")
    assert urls.match_port(settings, 20400) is None
    assert urls.match_port(settings, 8080) is None
    assert urls.match_port(settings, None) is None
    # a range that is not a multiple of 4 serves whole blocks only
    odd = Settings(routing_mode="port", public_url="http://127.0.0.1:8080", sandbox_ports="20000-20006")
    assert list(urls.sandbox_port_numbers(odd)) == [20000, 20001, 20002, 20003]
    assert urls.match_port(odd, 20004) is None


def test_path_and_subdomain_matching_is_off_in_port_mode() -> None:
    assert urls.match(port_settings(), "127.0.0.1:8080", f"/{RID}/alive") is None


@pytest.mark.parametrize("value", ["", "20000", "20000-", "a-b", "0-10", "20010-20000", "20000-20002", "65533-65540"])
def test_bad_port_ranges_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="sandbox_ports"):
        Settings(routing_mode="port", sandbox_ports=value)


def test_the_control_port_may_not_be_a_sandbox_port() -> None:
    with pytest.raises(ValidationError, match="must not contain the port of KUBEHANDS_PUBLIC_URL"):
        Settings(routing_mode="port", public_url="http://127.0.0.1:20004", sandbox_ports="20000-20399")


def test_no_url_variables_are_injected_in_port_mode() -> None:
    """The URL is a hash of the id, which `$(RUNTIME_ID)` cannot express; VS Code serves at / as in subdomain mode."""
    req = StartRequest(image="img", session_id="s", environment={"A": "1"})
    env = {e["name"]: e["value"] for e in build_environment(req, KeyRecord(name="k", digest="0" * 64), port_settings())}
    assert env == {"A": "1"}


def test_pick_runtime_id_avoids_used_slots() -> None:
    ids = iter(f"id-{n}" for n in range(100))
    slot_of = {f"id-{n}": n % 4 for n in range(100)}.__getitem__
    assert pick_runtime_id({0, 1, 2}, 4, slot_of, lambda: next(ids)) == "id-3"
    assert pick_runtime_id({0, 1, 2, 3}, 4, slot_of, lambda: "never") is None


def test_pick_runtime_id_gives_up_when_no_try_hits_a_free_slot() -> None:
    assert pick_runtime_id({0}, 2, lambda _: 0, lambda: "always-slot-0") is None


def test_listening_sockets_bind_every_port_or_none() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{busy}"):
            listening_sockets("127.0.0.1", [free, busy])
        # the first socket was closed again: its port can be bound
        with socket.socket() as again:
            again.bind(("127.0.0.1", free))
