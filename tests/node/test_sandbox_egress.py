"""Sandbox egress on the local cluster (hack/lib/egress.sh): what a pod may reach under each setting, seen from a
real pod of the agent-server image.

Nothing here leaves the machine: the "internet" is the stand-in network namespace of tests/helpers/internet.py
(203.0.113.10: a DNS server, a web host), and the hosts a sandbox must never reach (a private and a link-local
address) are more addresses of that namespace, each with a web server, so that a refusal can only come from the
host firewall in between. The allowed list names them too: the blocked ranges must win over it.
"""

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.helpers import egress
from tests.helpers.internet import SUBNET, WEB_BODY, TestInternet
from tests.helpers.kube import api_client
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.node, pytest.mark.timeout(600)]

BRIDGE_IP = "10.88.0.1"
APISERVER_PORT = 16443
PRIVATE = "192.168.231.10"  # RFC 1918
LINK_LOCAL = "169.254.99.10"  # the metadata services' range (never the metadata address itself)

# Runs in the pod: resolves names, fetches URLs and opens TCP connections; prints one JSON object.
PROBE = r"""
import json, socket, sys, time, urllib.request
checks = json.loads(sys.argv[1])
out = {}
def timed(fn):
    began = time.monotonic()
    try:
        result = fn()
    except Exception as error:
        result = f"error: {type(error).__name__}: {error}"
    return {"result": result, "seconds": round(time.monotonic() - began, 2)}
def resolve(name):
    return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
def get(url):
    return urllib.request.urlopen(url, timeout=8).read().decode()
def connect(host, port):
    with socket.create_connection((host, int(port)), timeout=8):
        return "open"
for key, (kind, *args) in checks.items():
    out[key] = timed(lambda: {"resolve": resolve, "get": get, "connect": connect}[kind](*args))
print(json.dumps(out))
"""


class HostListener:
    """A TCP port of the host on the bridge address, standing for the host's own services (a local LLM); it
    records who connected."""

    def __init__(self) -> None:
        self.socket = socket.create_server((BRIDGE_IP, 0))
        self.port = self.socket.getsockname()[1]
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, peer = self.socket.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            connection.close()

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def internet(cluster: dict[str, str], tmp_path: Path) -> Iterator[TestInternet]:
    with TestInternet(tmp_path / "internet") as net:
        yield net


@pytest.fixture
def host_ports() -> Iterator[tuple[HostListener, HostListener]]:
    opened, closed = HostListener(), HostListener()
    try:
        yield opened, closed
    finally:
        opened.close()
        closed.close()


def probe(kubeconfig: str, namespace: str, image: str, name: str, checks: dict[str, list[Any]]) -> dict[str, Any]:
    """Run PROBE in a pod (the sandbox's user, no service-account token); its results by check."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", PROBE, json.dumps(checks)],
            }],
        },
    }
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(namespace, pod)

        def finished() -> str | None:
            phase = core.read_namespaced_pod(name, namespace).status.phase
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_for(finished, 180, f"pod {name} to finish", interval=0.5)
        log = core.read_namespaced_pod_log(name, namespace)
    assert phase == "Succeeded", log
    results: dict[str, Any] = json.loads(log.strip().splitlines()[-1])
    return results


def refused(check: dict[str, Any]) -> bool:
    """Refused at once (a TCP reset or an ICMP error from the firewall), not left to time out."""
    return str(check["result"]).startswith("error: ConnectionRefusedError") and check["seconds"] < 3


def test_sandboxes_reach_only_what_the_egress_allows(
    kubeconfig: str, namespace: str, agent_server_image: str, internet: TestInternet,
    host_ports: tuple[HostListener, HostListener],
) -> None:
    opened, closed = host_ports
    private_url = internet.add_web_address(PRIVATE)
    link_local_url = internet.add_web_address(LINK_LOCAL)
    checks: dict[str, list[Any]] = {
        "name": ["resolve", internet.web_name],
        "web": ["get", internet.web_url],
        "private": ["get", private_url],
        "link_local": ["get", link_local_url],
        "private_tcp": ["connect", PRIVATE, 80],
        "link_local_tcp": ["connect", LINK_LOCAL, 80],
        "metadata_name": ["resolve", "metadata.google.internal"],
        "unknown_name": ["resolve", "nothing.kubehands.test"],
        "host_port_opened": ["connect", BRIDGE_IP, opened.port],
        "host_port_closed": ["connect", BRIDGE_IP, closed.port],
        "api_server": ["connect", BRIDGE_IP, APISERVER_PORT],
    }
    allowed = f"{SUBNET},{PRIVATE}/32,169.254.0.0/16"  # the blocked ranges must win over the list
    settings = egress.TEST_INTERNET | {"KUBEHANDS_SANDBOX_EGRESS": allowed,
                                       "KUBEHANDS_SANDBOX_HOST_PORTS": str(opened.port)}
    with egress.sandbox_egress(settings) as applied:
        assert applied["KUBEHANDS_SANDBOX_EGRESS"] == allowed
        seen = probe(kubeconfig, namespace, agent_server_image, "egress-allowed", checks)

    assert seen["name"]["result"] == [internet.address], seen["name"]
    assert seen["web"]["result"] == WEB_BODY, seen["web"]
    for blocked in ("private", "link_local", "private_tcp", "link_local_tcp", "host_port_closed"):
        assert refused(seen[blocked]) or "Connection refused" in str(seen[blocked]["result"]), (blocked, seen)
    assert str(seen["metadata_name"]["result"]).startswith("error: gaierror"), seen["metadata_name"]
    assert str(seen["unknown_name"]["result"]).startswith("error: gaierror"), seen["unknown_name"]
    assert seen["host_port_opened"]["result"] == "open", seen["host_port_opened"]
    assert seen["api_server"]["result"] == "open", seen["api_server"]
    assert len(opened.peers) == 1 and closed.peers == [], (opened.peers, closed.peers)
    # the resolver forwarded the names it may (never the metadata name), and the namespace sent nothing out
    asked = {query.get("name", "").rstrip(".").lower() for query in internet.dns_queries()}
    assert internet.web_name in asked and "metadata.google.internal" not in asked, asked
    assert internet.blocked_packets() == 0


def test_egress_none_blocks_names_and_addresses(
    kubeconfig: str, namespace: str, agent_server_image: str, internet: TestInternet,
    host_ports: tuple[HostListener, HostListener],
) -> None:
    opened, _ = host_ports
    checks: dict[str, list[Any]] = {
        "name": ["resolve", internet.web_name],
        "web_by_address": ["get", internet.web_ip_url],
        "tcp_by_address": ["connect", internet.address, 80],
        "host_port": ["connect", BRIDGE_IP, opened.port],
        "api_server": ["connect", BRIDGE_IP, APISERVER_PORT],
    }
    with egress.sandbox_egress({"KUBEHANDS_SANDBOX_EGRESS": "none"}) as applied:
        assert applied["KUBEHANDS_SANDBOX_DNS"] == ""
        seen = probe(kubeconfig, namespace, agent_server_image, "egress-none", checks)

    assert str(seen["name"]["result"]).startswith("error: gaierror") and seen["name"]["seconds"] < 3, seen["name"]
    assert refused(seen["tcp_by_address"]), seen["tcp_by_address"]
    assert "Connection refused" in str(seen["web_by_address"]["result"]), seen["web_by_address"]
    assert refused(seen["host_port"]) and opened.peers == [], seen["host_port"]
    assert seen["api_server"]["result"] == "open", seen["api_server"]
    # the pod's name never reached the DNS server (the only query is the namespace's own readiness check)
    assert internet.web_name not in {q.get("name", "").rstrip(".").lower() for q in internet.dns_queries()}
    assert internet.blocked_packets() == 0
