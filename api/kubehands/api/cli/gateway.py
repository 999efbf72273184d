"""`kubehands gateway`: serve the gateway with uvicorn."""

import argparse
import os
import resource
import signal
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubehands.api.server.protocol import ServerLimits
    from kubehands.api.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from the ingress in front of the gateway",
    )


def server_limits(settings: "Settings") -> "ServerLimits":
    from kubehands.api.server.protocol import ServerLimits

    return ServerLimits(
        max_head_bytes=settings.max_header_bytes,
        head_timeout_seconds=settings.head_timeout_seconds,
        max_connections_per_port=settings.max_connections_per_port,
    )


def uvicorn_options(
    host: str,
    port: int,
    log_level: str = "info",
    proxy_headers: bool = False,
    *,
    limits: "ServerLimits | None" = None,
) -> dict[str, Any]:
    """The uvicorn settings `kubehands gateway` runs with (tests serve the gateway with the same ones).

    Its HTTP protocol bounds request heads and connections and hands WebSocket upgrades to the router, which
    relays them as bytes (server/protocol.py): uvicorn's own WebSocket protocols are never used.
    """
    from kubehands.api.server.protocol import ServerLimits, protocol_class

    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "proxy_headers": proxy_headers,
        "timeout_graceful_shutdown": 30,
        "http": protocol_class(limits or ServerLimits()),
        "ws": "none",
    }


def listening_sockets(host: str, ports: Iterable[int | tuple[str, int]]) -> list[socket.socket]:
    """Bound, listening TCP sockets, one per port (port mode: the control API's, then every sandbox port), on
    `host`, or on the address given with a port as (address, port) (port mode's per-sandbox loopback addresses).

    Raises OSError naming the port when one is taken, after closing those already bound."""
    bound: list[socket.socket] = []
    try:
        for entry in ports:
            address, port = entry if isinstance(entry, tuple) else (host, entry)
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") from exc
            sock.listen(2048)
            sock.set_inheritable(True)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def raise_open_file_limit(needed: int) -> None:
    """Port mode listens on hundreds of ports: lift the soft limit of open files towards the hard one if short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed + 4096  # room for connections
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def serve(
    app: Any,
    host: str,
    port: int,
    log_level: str = "info",
    proxy_headers: bool = False,
    *,
    limits: "ServerLimits | None" = None,
    extra_ports: Sequence[int | tuple[str, int]] = (),
) -> None:
    """uvicorn as `kubehands gateway` runs it; `app` is an app or an "module:factory" path. The benchmarks
    serve their baselines through this too, so they differ from the gateway only in the app. `extra_ports` (port
    mode's sandbox ports) are served by the same app, on the same host or as (address, port) on their own."""
    import uvicorn

    # After its graceful shutdown uvicorn re-raises the SIGTERM it caught. The default action would end the
    # process before atexit runs, and the Kubernetes client's atexit removes the certificate and key files
    # it wrote to $TMPDIR for the kubeconfig: exit through SystemExit instead (status 143, as on a signal).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    options = uvicorn_options(host, port, log_level, proxy_headers, limits=limits)
    if not extra_ports:
        uvicorn.run(app, factory=isinstance(app, str), **options)
        return
    raise_open_file_limit(len(extra_ports) + 1)
    sockets = listening_sockets(host, [port, *extra_ports])
    config = uvicorn.Config(app, factory=isinstance(app, str), **options)
    uvicorn.Server(config).run(sockets=sockets)


def metrics_port_problem(host: str, port: int, public_port: int) -> str | None:
    """Why the metrics endpoint (`KUBEHANDS_GATEWAY_METRICS_*`) cannot listen, in one line, or None."""
    if not port:
        return None
    if port == public_port:
        return f"KUBEHANDS_GATEWAY_METRICS_PORT is --port ({port}): metrics are never served on the public port"
    try:
        for sock in listening_sockets(host, [port]):
            sock.close()
    except OSError as e:
        return f"cannot serve metrics (KUBEHANDS_GATEWAY_METRICS_PORT): {e.strerror}"
    return None


def run(args: argparse.Namespace) -> int:
    from kubehands.api.settings import get_settings

    # The metrics endpoint binds --host's address unless told otherwise: a gateway bound to loopback stays there.
    os.environ.setdefault("KUBEHANDS_GATEWAY_METRICS_HOST", args.host)
    settings = get_settings()  # read once here too: a bad setting fails before uvicorn starts
    problem = metrics_port_problem(settings.gateway_metrics_host, settings.gateway_metrics_port, args.port)
    if problem:  # the app's lifespan would fail the start too, but with a traceback
        print(f"kubehands gateway: error: {problem}", file=sys.stderr)
        return 2
    extra_ports: Sequence[int | tuple[str, int]] = ()
    if settings.routing_mode == "port":  # each sandbox's ports on its own loopback address with sandbox_loopback
        from kubehands.spec.urls import sandbox_listen_addresses

        extra_ports = sandbox_listen_addresses(settings, args.host)
    serve(
        "kubehands.api.main:create_app",
        args.host,
        args.port,
        args.log_level,
        args.proxy_headers,
        limits=server_limits(settings),
        extra_ports=extra_ports,
    )
    return 0
