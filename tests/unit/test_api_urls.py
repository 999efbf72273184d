"""Sandbox URLs in both routing modes and the router's reverse mapping (docs/runtime-api.md §7, §8.10)."""

import pytest
from pydantic import ValidationError

from kubehands.api.settings import Settings
from kubehands.spec import urls

pytestmark = pytest.mark.unit

RID = "kh-0123456789ab"


def test_path_mode_urls() -> None:
    settings = Settings(public_url="https://gw.example.test/")
    assert urls.sandbox_url(settings, RID) == f"https://gw.example.test/{RID}"
    assert urls.service_url(settings, RID, "vscode") == f"https://gw.example.test/{RID}/vscode"
    assert urls.work_hosts(settings, RID) == {
        f"https://gw.example.test/{RID}/work-1": 12000,
        f"https://gw.example.test/{RID}/work-2": 12001,
    }


def test_subdomain_mode_urls() -> None:
    settings = Settings(routing_mode="subdomain", domain="Runtime.Example.Test.")
    assert urls.sandbox_url(settings, RID) == f"https://{RID}.runtime.example.test"
    assert urls.service_url(settings, RID, "work-2") == f"https://work-2-{RID}.runtime.example.test"


def test_urls_match_what_v1_app_derives() -> None:
    """V1-app's `_build_service_url`: path mode iff the url path starts with /{runtime_id}."""
    from urllib.parse import urlparse

    for settings in (
        Settings(public_url="http://gw:8000"),
        Settings(routing_mode="subdomain", domain="d.test"),
    ):
        url = urls.sandbox_url(settings, RID)
        parsed = urlparse(url)
        if parsed.path.startswith(f"/{RID}"):
            derived = f"{parsed.scheme}://{parsed.netloc}/{RID}/vscode"
        else:
            derived = f"{parsed.scheme}://vscode-{parsed.netloc}{parsed.path or '/'}"
        assert derived.rstrip("/") == urls.service_url(settings, RID, "vscode")
        assert not url.endswith("/")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/{RID}", ("agent", "/")),
        (f"/{RID}/", ("agent", "/")),
        (f"/{RID}/alive", ("agent", "/alive")),
        (f"/{RID}/api/file/download?x", ("agent", "/api/file/download?x")),
        (f"/{RID}/vscode", ("vscode", f"/{RID}/vscode")),
        (f"/{RID}/vscode/x", ("vscode", f"/{RID}/vscode/x")),
        (f"/{RID}/vscode/connection_token", ("agent", "/vscode/connection_token")),
        (f"/{RID}/vscodex", ("agent", "/vscodex")),
        (f"/{RID}/work-1", ("work-1", "/")),
        (f"/{RID}/work-2/a/b", ("work-2", "/a/b")),
        ("/start", None),
        ("/sessions/kh-0123456789ab", None),
        ("/kh-0123456789abc/alive", None),
        ("/KH-0123456789AB/alive", None),
        ("/", None),
    ],
)
def test_match_path(path: str, expected: tuple[str, str] | None) -> None:
    target = urls.match_path(path)
    assert (None if target is None else (target.service, target.path)) == expected
    if target is not None:
        assert target.runtime_id == RID


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (f"{RID}.d.test", "agent"),
        (f"{RID}.D.TEST:443", "agent"),
        (f"vscode-{RID}.d.test", "vscode"),
        (f"work-1-{RID}.d.test", "work-1"),
        (f"work-2-{RID}.d.test", "work-2"),
        (f"other-{RID}.d.test", None),
        (f"{RID}.other.test", None),
        ("d.test", None),
        (f"x.{RID}.d.test", None),
    ],
)
def test_match_host(host: str, expected: str | None) -> None:
    target = urls.match_host(host, "d.test", "/p")
    assert (None if target is None else target.service) == expected
    if target is not None:
        assert (target.runtime_id, target.path) == (RID, "/p")


def test_subdomain_with_a_port() -> None:
    settings = Settings(routing_mode="subdomain", domain="sbx.test:8080", subdomain_scheme="http")
    assert urls.sandbox_url(settings, RID) == f"http://{RID}.sbx.test:8080"
    target = urls.match(settings, f"work-1-{RID}.sbx.test:8080", "/x")
    assert target is not None and (target.runtime_id, target.service) == (RID, "work-1")


def test_service_port_reads_spec_ports_then_defaults() -> None:
    sandbox = {"spec": {"ports": [{"name": "agent", "containerPort": 8000}]}}
    assert urls.service_port(sandbox, "agent") == 8000
    assert urls.service_port(sandbox, "vscode") == 60001
    assert urls.service_port({}, "work-2") == 12001


def test_subdomain_mode_needs_a_domain() -> None:
    with pytest.raises(ValidationError, match="DOMAIN"):
        Settings(routing_mode="subdomain")


def test_vscode_base_path_is_what_the_router_forwards_unstripped() -> None:
    path = urls.vscode_base_path(RID) + "/static/x.js"
    assert path == f"/{RID}/vscode/static/x.js"
    assert urls.match_path(path) == urls.Target(RID, "vscode", path)


@pytest.mark.parametrize(
    ("pod_ip", "expected"), [("10.0.0.5", "http://10.0.0.5:60000"), ("fd00::5", "http://[fd00::5]:60000")]
)
def test_upstream_base(pod_ip: str, expected: str) -> None:
    assert urls.upstream_base(pod_ip, 60000) == expected


@pytest.mark.parametrize("bad", ["gw.example.test", "ftp://x"])
def test_public_url_needs_a_scheme(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(public_url=bad)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEHANDS_ROUTING_MODE", "subdomain")
    monkeypatch.setenv("KUBEHANDS_DOMAIN", "rt.example.test")
    monkeypatch.setenv("KUBEHANDS_BASE_RESOURCES", '{"requests": {"cpu": "1"}}')
    monkeypatch.setenv("KUBEHANDS_RESOURCE_FACTORS", "[1, 2]")
    settings = Settings()
    assert settings.domain == "rt.example.test"
    assert settings.base_resources == {"requests": {"cpu": "1"}}
    assert settings.resource_factors == [1, 2]
    monkeypatch.setenv("KUBEHANDS_BASE_RESOURCES", '{"requests": {"cpu": "lots"}}')
    with pytest.raises(ValidationError):
        Settings()
