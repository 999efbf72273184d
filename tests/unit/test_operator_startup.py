"""kopf logs in through `kubehands.kube`, reading `$KUBECONFIG` when it logs in (not at import)."""

import base64
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from kubehands.operator import startup

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
