"""Port mode with a loopback address per sandbox (`KUBEHANDS_SANDBOX_LOOPBACK`, `make run`'s default): the URLs
handed out, the sockets the gateway listens on, and the settings refused. Browsers and cookie jars scope cookies by
host, not port, so one host per sandbox keeps one sandbox's cookies from every other (the whole path, through the
gateway, is tests/cluster/test_gateway_port_cookies.py)."""

import http.client
import http.cookiejar
import socket
import urllib.request
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import ValidationError

from kubehands.api.cli.gateway import listening_sockets
from kubehands.api.settings import Settings
from kubehands.spec import urls
from kubehands.spec.objects import mint_runtime_id
from tests.helpers.run_defaults import make_run_settings

pytestmark = pytest.mark.unit


def loopback_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "routing_mode": "port",
        "public_url": "http://127.0.0.1:8080",
        "sandbox_ports": "20000-20399",
        "sandbox_loopback": "127.1.0.1",
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def runtime_in_slot(settings: Settings, slot: int) -> str:
    while urls.port_slot(settings, runtime_id := mint_runtime_id()) != slot:
        pass
    return runtime_id


def test_each_slot_has_its_own_loopback_host_for_all_its_ports() -> None:
    settings = loopback_settings()
    rid = runtime_in_slot(settings, 5)
    assert urls.sandbox_url(settings, rid) == "http://127.1.0.6:20020"
    assert urls.service_url(settings, rid, "vscode") == "http://127.1.0.6:20021"
    assert urls.work_hosts(settings, rid) == {"http://127.1.0.6:20022": 12000, "http://127.1.0.6:20023": 12001}
    other = runtime_in_slot(settings, 6)
    assert urlsplit(urls.sandbox_url(settings, other)).hostname == "127.1.0.7"
    assert urls.slot_address(settings, 99) == "127.1.0.100"
    # the control API stays on public_url's host; routing is by port as before
    assert urls.match_port(settings, 20021) == (5, "vscode")


def test_without_the_setting_every_sandbox_shares_the_public_host() -> None:
    settings = loopback_settings(sandbox_loopback=None, public_url="http://devbox.example:8080")
    rid = runtime_in_slot(settings, 5)
    assert urls.sandbox_url(settings, rid) == "http://devbox.example:20020"
    assert urls.slot_address(settings, 5) is None
    assert urls.sandbox_listen_addresses(settings, "0.0.0.0")[:5] == [("0.0.0.0", p) for p in range(20000, 20005)]
    assert Settings(routing_mode="port", sandbox_loopback="").sandbox_loopback is None  # an empty variable


def test_the_gateway_listens_on_each_slots_address() -> None:
    settings = loopback_settings(sandbox_ports="20000-20011")
    assert urls.sandbox_listen_addresses(settings, "0.0.0.0") == [
        ("127.1.0.1", 20000), ("127.1.0.1", 20001), ("127.1.0.1", 20002), ("127.1.0.1", 20003),
        ("127.1.0.2", 20004), ("127.1.0.2", 20005), ("127.1.0.2", 20006), ("127.1.0.2", 20007),
        ("127.1.0.3", 20008), ("127.1.0.3", 20009), ("127.1.0.3", 20010), ("127.1.0.3", 20011),
    ]  # fmt: skip


def test_listening_sockets_bind_given_addresses_only() -> None:
    """A port bound on one sandbox's address is not reachable on another's (Linux routes 127.0.0.0/8 to lo)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sockets = listening_sockets("127.0.0.1", [("127.1.0.7", port)])
    try:
        assert sockets[0].getsockname() == ("127.1.0.7", port)
        socket.create_connection(("127.1.0.7", port), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.1.0.8", port), timeout=5)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("10.0.0.1", "IPv4 loopback"),
        ("::1", "IPv4 loopback"),
        ("localhost", "IPv4 loopback address such as"),
        ("127.255.255.200", "room for 55 sandboxes"),
        ("127.0.0.0", "must not include the host of KUBEHANDS_PUBLIC_URL"),
    ],
)
def test_bad_loopback_settings_are_refused(value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        loopback_settings(sandbox_loopback=value)


def test_make_run_gives_each_sandbox_its_own_host() -> None:
    settings = Settings(public_url="http://127.0.0.1:8080", **make_run_settings())  # type: ignore[arg-type]
    hosts = {urlsplit(urls.sandbox_url(settings, runtime_in_slot(settings, s))).hostname for s in (0, 1, 99)}
    assert hosts == {"127.1.0.1", "127.1.0.2", "127.1.0.100"}
    # openhands-workspace asserts `httpx.Client(base_url=url).base_url == url` of the URL it is given
    url = urls.sandbox_url(settings, runtime_in_slot(settings, 7))
    assert httpx.Client(base_url=url).base_url == url


def test_a_cookie_jar_keeps_a_hosts_cookie_from_the_others() -> None:
    """Why a host per sandbox: the standard library's cookie jar (httpx's), like browsers, sends a host's cookie to
    every port of that host, and to no other host."""

    def sent(jar: http.cookiejar.CookieJar, url: str) -> str | None:
        request = urllib.request.Request(url)
        jar.add_cookie_header(request)
        return request.get_header("Cookie")

    jar = http.cookiejar.CookieJar()
    response_url = "http://127.1.0.1:20001/?tkn=k"
    headers = http.client.HTTPMessage()
    headers["Set-Cookie"] = "vscode-tkn=k; Path=/; SameSite=Lax"

    class Response:
        def info(self) -> http.client.HTTPMessage:
            return headers

    jar.extract_cookies(Response(), urllib.request.Request(response_url))  # type: ignore[arg-type]
    assert sent(jar, "http://127.1.0.1:20001/") == "vscode-tkn=k"
    assert sent(jar, "http://127.1.0.1:20005/") == "vscode-tkn=k"  # another port of the same host: shared
    assert sent(jar, "http://127.1.0.2:20005/") is None  # another host: never
