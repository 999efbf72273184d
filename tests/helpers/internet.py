"""The tests' stand-in for the internet: a network namespace with a DNS server, a web server and a fake LLM.

Sandbox traffic must never leave the machine in tests and CI, yet an agent must resolve and call an LLM. So
`TestInternet` builds, on this host only:

- a network namespace `kh-inet-<owner pid>-<owner start>-<hex>` joined to the host by a veth pair: host side
  `khinet<hex>` with 203.0.113.1/24, namespace side `eth0` with 203.0.113.10/24 and a default route via
  203.0.113.1 (its answers to pods go back through the host); TEST-NET-3 (RFC 5737), never a real address;
- in it, on 203.0.113.10: `fake_dns.py` on port 53 (UDP and TCP; `llm.kubehands.test` and `web.kubehands.test`
  → 203.0.113.10, NXDOMAIN for anything else), `fake_web.py` on port 80 answering `WEB_BODY`, and `fake_llm.py`
  on port 8000 (`LLM_BASE_URL`, key `LLM_API_KEY`);
- on demand (`client()`), a namespace standing in for a sandbox pod: joined to the internet namespace alone
  (198.51.100.2/30, TEST-NET-2, default route via 198.51.100.1; the next client .6 via .5), its resolver
  203.0.113.10 (`ip netns exec` mounts `/etc/netns/<name>/resolv.conf` over `/etc/resolv.conf` for the processes
  it starts there).

Nothing in these namespaces can reach a real network, and each counts what tried (`blocked_packets()`): their
own iptables reject every packet they originate that is not a reply, unless it is for the test subnets (the
internet namespace) or for 203.0.113.10 (a client namespace); the internet namespace never forwards (`ip_forward`
is 0 in it: a new namespace copies the host's 1); IPv6 is off in both. Without that, a lookup a server made of its
own (HTTPServer's `getfqdn`) went out through the host's resolver. No host sysctl or host firewall rule is
changed: forwarding between the cluster's pods and 203.0.113.0/24 is the cluster's job (hack/cluster.sh). The
servers start with `nsenter --net`: a network namespace and nothing else (no mount namespace, nothing mounted).

On exit it stops its processes by PID and deletes its namespaces (the veth pairs go with them) and
`/etc/netns/<name>`. On entry it removes the leftovers of crashed runs: namespaces with its prefix whose owner
(pid and start time, in the name) is dead, with every process still in them. The addresses are fixed, so one
`TestInternet` runs on a host at a time; a live one, or any other use of 203.0.113.0/24 on the host, is an error.
Needs root.
"""

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import fake_dns, fake_llm
from tests.helpers.wait import wait_for

NETNS_PREFIX = "kh-inet-"
VETH_PREFIX = "khinet"
SUBNET = "203.0.113.0/24"
HOST_ADDRESS = "203.0.113.1"
INTERNET_ADDRESS = "203.0.113.10"
CLIENT_SUBNET = "198.51.100.0/24"  # client n: gateway .4n-3 and address .4n-2 of its own /30 (first: .1 and .2)
LLM_NAME = "llm.kubehands.test"
WEB_NAME = "web.kubehands.test"
DNS_PORT, WEB_PORT, LLM_PORT = 53, 80, 8000
LLM_BASE_URL = f"http://{LLM_NAME}:{LLM_PORT}/v1"
LLM_IP_BASE_URL = f"http://{INTERNET_ADDRESS}:{LLM_PORT}/v1"
LLM_API_KEY = "kh-test-llm-key"
LLM_MODEL = f"openai/{fake_llm.MODEL}"
WEB_BODY = "kubehands test internet: host reached\n"
RECORDS = {LLM_NAME: INTERNET_ADDRESS, WEB_NAME: INTERNET_ADDRESS}

HELPERS = Path(__file__).resolve().parent
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
_NAME = re.compile(rf"^{NETNS_PREFIX}(\d+)-(\d+)-")
_CLIENT = re.compile(r"-client\d+$")  # a client's name: its internet's, then this (hex never has an "l")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_alive(name: str) -> bool:
    match = _NAME.match(name)
    return match is not None and _start_time(int(match[1])) == int(match[2])


def namespaces() -> list[str]:
    """This host's network namespaces with the prefix (live or left over)."""
    listed = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    return [name for name in listed if name.startswith(NETNS_PREFIX)]


def _nsenter(netns: str, argv: list[str], stdin: str | None = None) -> str:
    """Run `argv` in network namespace `netns` alone (nsenter fails, and runs nothing, when it cannot enter)."""
    done = subprocess.run(["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv], input=stdin, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{argv} in {netns}: {done.stderr.strip()}")
    return done.stdout


def _isolate(netns: str, allowed: list[str]) -> None:
    """Make `netns` a dead end: no forwarding, no IPv6, and every packet it originates rejected (and counted)
    unless it is a reply or goes to `allowed`. All of it the namespace's own, set before its links exist."""
    _nsenter(netns, ["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"
                     " && echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"
                     " && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"])  # fmt: skip
    rules = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "-A OUTPUT -o lo -j ACCEPT",
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        *(f"-A OUTPUT -d {net} -j ACCEPT" for net in allowed),
        "-A OUTPUT -j REJECT",
        "COMMIT",
    ]
    _nsenter(netns, ["iptables-restore", "-w"], "\n".join(rules) + "\n")


def blocked_packets(netns: str) -> int:
    """How many packets `netns` originated that its firewall rejected (see `_isolate`)."""
    for line in _nsenter(netns, ["iptables", "-w", "-n", "-v", "-x", "-L", "OUTPUT"]).splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "REJECT":
            return int(fields[0])
    raise AssertionError(f"no REJECT rule in {netns}'s OUTPUT chain")


def netns_pids(name: str) -> list[int]:
    """The processes whose network namespace is `name`."""
    return [int(pid) for pid in _ip("netns", "pids", name).split()]


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an orphan's is reaped by init when init gets to it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(pids: list[int], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL what is still running after `timeout`; wait until none runs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            wait_for(lambda: not any(running(pid) for pid in pids), timeout, f"processes {pids} to exit")
            return
        except TimeoutError:
            if sig == signal.SIGKILL:
                raise


def delete_namespace(name: str) -> None:
    """Stop every process in netns `name` by PID, delete it and its `/etc/netns/<name>` (a no-op if it is gone)."""
    if (NETNS_DIR / name).exists():
        _stop(netns_pids(name))
        _ip("netns", "delete", name)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
    try:
        ETC_NETNS.rmdir()  # only when empty: other namespaces' files stay
    except OSError:
        pass


def remove_leftovers() -> list[str]:
    """Delete the namespaces (and /etc/netns folders) of earlier runs whose owner is dead; return their names."""
    stale = [name for name in namespaces() if not _owner_alive(name)]
    if ETC_NETNS.is_dir():
        stale += [p.name for p in ETC_NETNS.iterdir() if p.name.startswith(NETNS_PREFIX) and not _owner_alive(p.name)]
    for name in sorted(set(stale), reverse=True):  # a client namespace ("...-client1") before its internet
        delete_namespace(name)
    return sorted(set(stale))


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> tuple[int, str]:
    """GET with no proxy (the environment's proxies never see test traffic)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return response.status, response.read().decode()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ClientNamespace:
    """A namespace standing in for a sandbox pod: it reaches 203.0.113.10 through the internet namespace only,
    and resolves names with it. `command(...)` is the argv that runs a program in it; `address` is its IPv4."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        return netns_pids(self.name)

    def blocked_packets(self) -> int:
        """Packets its processes sent that were neither for 203.0.113.10 nor replies: each was rejected."""
        return blocked_packets(self.name)


class TestInternet:
    """Context manager: the namespace, its veth and servers while the block runs (see the module docstring).

    `workdir` (a test's tmp_path) keeps the servers' logs: `llm_requests()` and `dns_queries()` read them."""

    __test__ = False  # not a pytest test class

    llm_base_url = LLM_BASE_URL
    llm_ip_base_url = LLM_IP_BASE_URL
    llm_api_key = LLM_API_KEY
    llm_model = LLM_MODEL
    dns_server = INTERNET_ADDRESS
    address = INTERNET_ADDRESS
    host_address = HOST_ADDRESS
    web_name = WEB_NAME
    web_url = f"http://{WEB_NAME}:{WEB_PORT}/"
    web_ip_url = f"http://{INTERNET_ADDRESS}:{WEB_PORT}/"

    def __init__(self, workdir: Path, command: str = fake_llm.DEFAULT_COMMAND, timeout: float = 30) -> None:
        self.workdir = workdir
        self.command = command
        self.timeout = timeout
        owner = os.getpid()
        self.name = f"{NETNS_PREFIX}{owner}-{_start_time(owner)}-{secrets.token_hex(3)}"
        self.veth = f"{VETH_PREFIX}{secrets.token_hex(4)}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._clients = 0
        self.llm_log = workdir / "llm-requests.jsonl"
        self.dns_log = workdir / "dns-queries.jsonl"

    # -- lifecycle

    def __enter__(self) -> "TestInternet":
        self.workdir.mkdir(parents=True, exist_ok=True)
        remove_leftovers()
        self._check_free()
        try:
            self._create()
            self._start_servers()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_free(self) -> None:
        live = [name for name in namespaces() if not _CLIENT.search(name)]
        if live:
            raise RuntimeError(f"another test internet is running (its owner is alive): {live}")
        subnet = ipaddress.ip_network(SUBNET)
        for link in json.loads(_ip("-j", "addr", "show")):
            for info in link.get("addr_info", []):
                if info.get("family") == "inet" and ipaddress.ip_address(info["local"]) in subnet:
                    raise RuntimeError(f"{info['local']} is already on {link['ifname']}: {SUBNET} is in use here")
        routes = json.loads(_ip("-j", "route", "show", "to", "match", INTERNET_ADDRESS))
        if [r for r in routes if r.get("dst") != "default"]:
            raise RuntimeError(f"the host already routes {INTERNET_ADDRESS}: {routes}")

    def _create(self) -> None:
        _ip("netns", "add", self.name)
        _isolate(self.name, [SUBNET, CLIENT_SUBNET])
        # one call makes both ends, the peer already inside: a crash never leaves a half pair on the host
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "addr", "add", f"{INTERNET_ADDRESS}/24", "dev", "eth0")
        _ip("-n", self.name, "link", "set", "eth0", "up")
        _ip("-n", self.name, "route", "add", "default", "via", HOST_ADDRESS)

    def _spawn(self, what: str, argv: list[str]) -> None:
        with open(self.workdir / f"{what}.out", "ab") as out:
            self.processes[what] = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR / self.name}", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def _start_servers(self) -> None:
        python = sys.executable
        records = [arg for name, ip in RECORDS.items() for arg in ("--record", f"{name}={ip}")]
        self._spawn("dns", [python, str(HELPERS / "fake_dns.py"), "--host", INTERNET_ADDRESS,
                            "--port", str(DNS_PORT), *records, "--log", str(self.dns_log)])  # fmt: skip
        self._spawn("web", [python, str(HELPERS / "fake_web.py"), "--host", INTERNET_ADDRESS, "--port", str(WEB_PORT),
                            "--body", WEB_BODY])  # fmt: skip
        self._spawn("llm", [python, str(HELPERS / "fake_llm.py"), "--host", INTERNET_ADDRESS, "--port",
                            str(LLM_PORT), "--command", self.command, "--api-key", LLM_API_KEY,
                            "--log", str(self.llm_log)])  # fmt: skip
        self._wait("the DNS server", lambda: fake_dns.query(INTERNET_ADDRESS, LLM_NAME, timeout=0.5).addresses)
        self._wait("the web server", lambda: http_get(self.web_ip_url) == (200, WEB_BODY))
        auth = {"Authorization": f"Bearer {LLM_API_KEY}"}
        self._wait("the fake LLM", lambda: http_get(f"{LLM_IP_BASE_URL}/models", auth)[0] == 200)

    def _wait(self, what: str, ready: Any) -> None:
        def check() -> Any:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log = (self.workdir / f"{name}.out").read_text()[-2000:]
                    raise AssertionError(f"the {name} server exited ({process.returncode}):\n{log}")
            return ready()

        try:
            wait_for(check, self.timeout, f"{what} to answer on {INTERNET_ADDRESS} through {self.veth}")
        except TimeoutError as error:
            if isinstance(error.__context__, AssertionError):
                raise error.__context__ from None
            raise

    def close(self) -> None:
        """Stop the servers, delete the namespaces, veth pairs and /etc/netns folders (idempotent)."""
        _stop([p.pid for p in self.processes.values() if p.poll() is None])
        for process in self.processes.values():
            process.wait()
        for index in range(self._clients, 0, -1):
            delete_namespace(f"{self.name}-client{index}")
        delete_namespace(self.name)
        wait_for(lambda: self.veth not in _ip("-o", "link", "show"), self.timeout, f"{self.veth} to go")

    def add_web_address(self, address: str) -> str:
        """One more address of the namespace, routed to it from the host, with a web server of its own: it stands
        for a host in a range sandboxes must never reach (private, link-local), so that a refusal can only come
        from the firewall in between. Its URL; the route goes with the veth."""
        _ip("-n", self.name, "addr", "add", f"{address}/32", "dev", "eth0")
        _ip("route", "add", f"{address}/32", "via", INTERNET_ADDRESS, "dev", self.veth)
        self._spawn(f"web-{address}", [sys.executable, str(HELPERS / "fake_web.py"), "--host", address,
                                       "--port", str(WEB_PORT), "--body", WEB_BODY])  # fmt: skip
        url = f"http://{address}:{WEB_PORT}/"
        self._wait(f"the web server on {address}", lambda: http_get(url) == (200, WEB_BODY))
        return url

    # -- clients

    @contextmanager
    def client(self) -> Iterator[ClientNamespace]:
        """A sandbox-like namespace for the block; on exit every process left in it is stopped, and it is deleted."""
        self._clients += 1
        index = self._clients
        name, inside = f"{self.name}-client{index}", f"cli{index}"
        block = ipaddress.ip_network(CLIENT_SUBNET).network_address + 4 * (index - 1)
        gateway, address = str(block + 1), str(block + 2)
        try:
            (ETC_NETNS / name).mkdir(parents=True)
            (ETC_NETNS / name / "resolv.conf").write_text(f"nameserver {INTERNET_ADDRESS}\noptions timeout:2\n")
            _ip("netns", "add", name)
            _isolate(name, [f"{INTERNET_ADDRESS}/32"])
            _ip("link", "add", inside, "netns", self.name, "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("-n", self.name, "addr", "add", f"{gateway}/30", "dev", inside)
            _ip("-n", self.name, "link", "set", inside, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "route", "add", "default", "via", gateway)
            yield ClientNamespace(name, address)
        finally:
            delete_namespace(name)

    # -- what the servers saw

    def blocked_packets(self) -> int:
        """Packets the internet namespace originated that were neither replies nor for the test subnets."""
        return blocked_packets(self.name)

    def llm_requests(self) -> list[dict[str, Any]]:
        """The fake LLM's request log: one dict per request (see fake_llm.py)."""
        return _read_jsonl(self.llm_log)

    def llm_completions(self) -> list[dict[str, Any]]:
        """The chat-completion requests alone."""
        return [r for r in self.llm_requests() if r.get("method") == "POST"]

    def dns_queries(self) -> list[dict[str, Any]]:
        """The DNS server's query log: one dict per query (see fake_dns.py)."""
        return _read_jsonl(self.dns_log)
