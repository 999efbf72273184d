"""The tests' stand-in internet (tests/helpers/internet.py) and the fake LLM driving real OpenHands agents.

These need root and network namespaces but no cluster: no test here asks for the `cluster` fixture. They live in
the node tier, the one that already needs the host's own machinery (root, kernel namespaces) and runs as root in
`make test`; the cluster tier means "the API server alone", the unit tier "nothing".

The agent runs in a client namespace that stands in for a sandbox pod (its only route goes to the test internet,
its resolver is the fake DNS server), so an agent that tried to reach anything else would show in the DNS log or
in the namespace's count of rejected packets, and could not get out.
"""

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import fake_dns, fake_llm
from tests.helpers.internet import (
    ETC_NETNS,
    INTERNET_ADDRESS,
    LLM_NAME,
    WEB_BODY,
    WEB_NAME,
    TestInternet,
    http_get,
    namespaces,
    netns_pids,
    remove_leftovers,
    running,
)
from tests.helpers.local_agent import agent_command, agent_env, agent_results, client_python
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def internet(tmp_path: Path) -> Iterator[TestInternet]:
    with TestInternet(tmp_path / "internet") as net:
        yield net


def links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def in_client(client_argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(client_argv, capture_output=True, text=True, timeout=timeout)


def test_comes_up_and_goes_away_without_a_trace(tmp_path: Path) -> None:
    with TestInternet(tmp_path / "internet") as net:
        pids = sorted(p.pid for p in net.processes.values())
        assert sorted(netns_pids(net.name)) == pids and all(running(pid) for pid in pids)
        assert f"{net.veth}@" in links()
        addresses = subprocess.run(["ip", "-4", "-o", "addr", "show", net.veth], capture_output=True, text=True)
        assert "203.0.113.1/24" in addresses.stdout
        forward = subprocess.run(["nsenter", f"--net=/run/netns/{net.name}", "cat", "/proc/sys/net/ipv4/ip_forward"],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        assert forward.stdout.strip() == "0"
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1", "the host's forwarding is untouched"
        with net.client() as client:
            assert client.name in namespaces() and (ETC_NETNS / client.name / "resolv.conf").exists()
            # a process left behind in the client namespace (tmux servers do that) is stopped with it
            sleeper = subprocess.Popen(client.command("sleep", "600"))
            wait_for(lambda: sleeper.pid in client.pids(), 10, "the sleeper to run in the client namespace")
        assert sleeper.wait(timeout=10) is not None
        assert client.name not in namespaces() and not (ETC_NETNS / client.name).exists()
        assert net.blocked_packets() == 0
    assert net.name not in namespaces()
    assert f"{net.veth}@" not in links()
    assert not any(running(pid) for pid in pids)
    assert not (ETC_NETNS / net.name).exists()


def test_a_crashed_runs_leftovers_are_removed_and_a_live_one_is_not_touched(tmp_path: Path) -> None:
    """A run killed with SIGKILL leaves its namespace, veth and servers; the next run removes them, and only once
    their owner is dead: while it lives, starting another is an error that leaves it alone."""
    script = (
        "import sys; from pathlib import Path; from tests.helpers.internet import TestInternet\n"
        "net = TestInternet(Path(sys.argv[1])).__enter__()\n"
        "print(net.name, net.veth, flush=True)\n"
        "sys.stdin.read()\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "crashed")], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert owner.stdout is not None
        name, veth = owner.stdout.readline().split()
        servers = netns_pids(name)
        assert len(servers) == 3
        with pytest.raises(RuntimeError, match="another test internet is running"):
            TestInternet(tmp_path / "second").__enter__()
        assert name in namespaces() and all(running(pid) for pid in servers)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
    assert name in namespaces() and all(running(pid) for pid in servers), "a SIGKILL leaves everything behind"
    assert remove_leftovers() == [name]
    assert name not in namespaces()
    wait_for(lambda: f"{veth}@" not in links(), 10, f"{veth} to go with its namespace")
    assert not any(running(pid) for pid in servers)


def test_dns_answers_the_test_names_and_nothing_else(internet: TestInternet) -> None:
    for transport in ("udp", "tcp"):
        tcp = transport == "tcp"
        for name in (LLM_NAME, WEB_NAME, "LlM.KubeHands.Test"):
            answer = fake_dns.query(INTERNET_ADDRESS, name, tcp=tcp)
            assert (answer.rcode, answer.addresses, answer.authoritative) == (0, [INTERNET_ADDRESS], True), name
            assert answer.question[:-4] == fake_dns._encode_name(name), "the question is echoed, case and all"
        nodata = fake_dns.query(INTERNET_ADDRESS, LLM_NAME, fake_dns.TYPE_AAAA, tcp=tcp)
        assert (nodata.rcode, nodata.addresses) == (fake_dns.NOERROR, [])
        for name in ("nope.kubehands.test", "kubehands.test", "example.com"):
            answer = fake_dns.query(INTERNET_ADDRESS, name, tcp=tcp)
            assert (answer.rcode, answer.addresses) == (fake_dns.NXDOMAIN, []), name

    # glibc's resolver, through the resolv.conf of a client namespace: getent and Python's getaddrinfo
    with internet.client() as client:
        found = in_client(client.command("getent", "ahostsv4", LLM_NAME))
        assert found.returncode == 0 and found.stdout.split()[0] == INTERNET_ADDRESS, found
        assert in_client(client.command("getent", "hosts", "nope.kubehands.test")).returncode == 2
        code = (
            "import json, socket\n"
            "def resolve(name):\n"
            "    try: return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)})\n"
            "    except socket.gaierror as e: return e.errno\n"
            f"print(json.dumps([resolve({LLM_NAME!r}), resolve({WEB_NAME!r}), resolve('nope.kubehands.test')]))\n"
        )
        resolved = in_client(client.command(sys.executable, "-c", code))
        assert resolved.returncode == 0, resolved.stderr
        assert json.loads(resolved.stdout) == [[INTERNET_ADDRESS], [INTERNET_ADDRESS], -2], "-2: EAI_NONAME"
        assert client.blocked_packets() == 0
    assert {q["transport"] for q in internet.dns_queries()} == {"udp", "tcp"}


def test_the_web_host_is_reached(internet: TestInternet) -> None:
    assert http_get(internet.web_ip_url) == (200, WEB_BODY)  # from the host, through the veth
    code = "import urllib.request as u, sys; sys.stdout.write(u.urlopen(sys.argv[1], timeout=10).read().decode())"
    with internet.client() as first, internet.client() as second:  # side by side, each in a /30 of its own
        assert (first.address, second.address) == ("198.51.100.2", "198.51.100.6")
        for client in (first, second):
            fetched = in_client(client.command(sys.executable, "-c", code, internet.web_url))
            assert (fetched.returncode, fetched.stdout) == (0, WEB_BODY), fetched.stderr
        # anything but the test internet is refused at once, and counted
        assert first.blocked_packets() == 0
        outside = in_client(first.command(sys.executable, "-c", code, "http://198.18.0.1/"))
        assert outside.returncode != 0 and "refused" in outside.stderr, outside.stderr
        assert first.blocked_packets() >= 1
    assert {q["client"] for q in internet.dns_queries() if q["name"] == WEB_NAME} >= {"198.51.100.2", "198.51.100.6"}


@pytest.mark.parametrize("kind", ["sdk", "app"], ids=["sdk-1.58.2", "app-sdk-1.34.0"])
def test_the_fake_llm_drives_a_real_agent(internet: TestInternet, tmp_path: Path, kind: str) -> None:
    """A local Conversation of the real SDK calls the fake LLM by name from a client namespace, runs the command it
    is told to in its terminal tool, sends the output back, and finishes when told to: plain and streaming."""
    python = client_python(kind)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    with internet.client() as client, agent_env(tmp_path / "agent") as env:
        argv = agent_command(python, internet.llm_base_url, internet.llm_api_key, internet.llm_model, workspace)
        ran = subprocess.run(client.command(*argv), env=env, capture_output=True, text=True, timeout=300)
        output = f"{ran.stdout}\n{ran.stderr}"[-8000:]
        assert ran.returncode == 0, output
        blocked = client.blocked_packets()
        sockets = list(Path(env["TMUX_TMPDIR"]).glob("tmux-*/openhands*"))
        assert sockets, "the terminal tool's tmux sockets are in TMUX_TMPDIR, not /tmp"
    results = agent_results(ran.stdout)
    assert [r["stream"] for r in results] == [False, True], output
    for result in results:
        assert result["status"] == "finished", result
        ran_it = [o for o in result["observations"] if o["tool"] == "terminal"]
        assert len(ran_it) == 1 and fake_llm.DEFAULT_OUTPUT in ran_it[0]["text"], result
        assert result["prompt_tokens"] > 0 and result["completion_tokens"] > 0, result
    assert results[1]["chunks"] > 0, "the streaming run got its answer in chunks"

    completions = internet.llm_completions()
    assert [(c["stream"], c["status"], c["client"]) for c in completions] == [
        (stream, 200, client.address) for stream in (False, False, True, True)
    ], completions
    for first, second in (completions[0:2], completions[2:4]):
        assert "terminal" in first["tools"] and "finish" in first["tools"]
        assert first["answer"] == {"tool": "terminal", "arguments": {"command": fake_llm.DEFAULT_COMMAND}}
        assert any(fake_llm.DEFAULT_OUTPUT in text for text in second["tool_results"]), second
        assert second["answer"] == {"tool": "finish", "arguments": {"message": fake_llm.FINISH_MESSAGE}}
    # the agent looked up the LLM's name and nothing else, and sent nothing anywhere else
    assert {q["name"] for q in internet.dns_queries() if q["client"] == client.address} == {LLM_NAME}
    assert blocked == 0
    assert internet.blocked_packets() == 0
