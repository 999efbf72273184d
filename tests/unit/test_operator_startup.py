"""kopf logs in through `kubehands.kube`, with `KUBEHANDS_KUBECONFIG` (as the gateway), else reading `$KUBECONFIG`
when it logs in (not at import); the operator's own API client logs in with the same file."""

import asyncio
import base64
import contextlib
import logging
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from kubehands.operator import startup
from kubehands.operator.config import OperatorConfig

pytestmark = pytest.mark.unit


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, user: dict[str, Any], **cluster: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


async def test_login_with_a_token_from_the_kubeconfig_named_at_login_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"token": "abc"}, **{"insecure-skip-tls-verify": True})
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings = kopf.OperatorSettings()
    info = await startup.login(settings=settings)
    assert (info.server, info.scheme, info.token, info.insecure) == ("https://127.0.0.1:6443", "Bearer", "abc", True)
    assert (info.username, info.password, info.certificate_path, info.ca_path) == (None, None, None, None)
    assert info.trust_env == settings.networking.trust_env


async def test_login_with_client_certificates_and_a_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")}
    kubeconfig = write_kubeconfig(tmp_path / "kc", user, **{"certificate-authority-data": b64(b"CA")})
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = await startup.login(settings=kopf.OperatorSettings())
    assert (info.scheme, info.token, info.insecure) == (None, None, False)
    files = (info.ca_path, info.certificate_path, info.private_key_path)
    assert [Path(str(f)).read_bytes() for f in files] == [b"CA", b"CERT", b"KEY"]


# ---- KUBEHANDS_KUBECONFIG: the operator logs in with the file the gateway would use ----------


def two_kubeconfigs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBEHANDS_KUBECONFIG names one cluster, KUBECONFIG another (as `make run` and the tests may set them)."""
    insecure = {"insecure-skip-tls-verify": True}
    ours = write_kubeconfig(tmp_path / "ours", {"token": "ours"}, server="https://ours.example:6443", **insecure)
    other = write_kubeconfig(tmp_path / "other", {"token": "other"}, server="https://other.example:6443", **insecure)
    monkeypatch.setenv("KUBEHANDS_KUBECONFIG", str(ours))
    monkeypatch.setenv("KUBECONFIG", str(other))


def test_the_operator_reads_kubehands_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    two_kubeconfigs(tmp_path, monkeypatch)
    assert OperatorConfig().kubeconfig == str(tmp_path / "ours")
    monkeypatch.delenv("KUBEHANDS_KUBECONFIG")
    assert OperatorConfig().kubeconfig is None  # then in-cluster, else $KUBECONFIG (kubehands.kube)


async def test_login_prefers_kubehands_kubeconfig_to_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf's connection: the operator's configuration when startup made it, else read from the environment."""
    two_kubeconfigs(tmp_path, monkeypatch)
    for memo in (kopf.Memo(config=OperatorConfig()), kopf.Memo(), None):
        info = await startup.login(settings=kopf.OperatorSettings(), memo=memo)
        assert (info.server, info.token) == ("https://ours.example:6443", "ours"), memo
    # Unset: $KUBECONFIG, as before.
    monkeypatch.delenv("KUBEHANDS_KUBECONFIG")
    info = await startup.login(settings=kopf.OperatorSettings(), memo=kopf.Memo(config=OperatorConfig()))
    assert (info.server, info.token) == ("https://other.example:6443", "other")


async def test_startup_connects_its_api_client_with_kubehands_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's own API client (memo.kube) logs in with the same file as kopf's connection."""
    two_kubeconfigs(tmp_path, monkeypatch)
    monkeypatch.setenv("KUBEHANDS_METRICS_PORT", "0")
    monkeypatch.setenv("KUBEHANDS_KUBE_REQUEST_TIMEOUT_SECONDS", "3")
    connected: list[tuple[str | None, float]] = []

    async def connect(kubeconfig: str | None = None, request_timeout: float = 10.0) -> Any:
        connected.append((kubeconfig, request_timeout))
        return object()

    monkeypatch.setattr(startup.Kube, "connect", connect)
    memo = kopf.Memo()
    await startup.configure(
        settings=kopf.OperatorSettings(),
        memo=memo,
        logger=logging.getLogger("test"),
        sandbox_bodies={},
        sandbox_pods={},
        pool_bodies={},
        pool_claims={},
    )
    memo.culler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.culler
    assert connected == [(str(tmp_path / "ours"), 3.0)]
