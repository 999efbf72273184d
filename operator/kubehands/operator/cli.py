"""`kubehands operator`: run the Sandbox operator (kopf, standalone: one replica, no peering)."""

import argparse
from urllib.parse import urlsplit

from kubehands.operator.config import OperatorConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NAMESPACE",
        help="namespace to watch (repeatable; default: KUBEHANDS_NAMESPACES, else all)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve the liveness probe, e.g. http://0.0.0.0:8080/healthz (not on KUBEHANDS_METRICS_PORT)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO, including kopf's own messages")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG")


def port_clash(liveness: str | None, metrics_port: int) -> str | None:
    """Why kopf's liveness endpoint and the metrics endpoint cannot both listen, or None."""
    if not liveness or not metrics_port:
        return None
    try:
        port = urlsplit(liveness).port
    except ValueError:
        return None  # kopf reports a malformed URL itself
    if port == metrics_port:
        return f"--liveness {liveness} uses port {port}, which is KUBEHANDS_METRICS_PORT: set another for either"
    return None


def run(args: argparse.Namespace) -> int:
    import kopf  # only this subcommand loads kopf

    import kubehands.operator  # noqa: F401  (registers the handlers)

    config = OperatorConfig()
    clash = port_clash(args.liveness, config.metrics_port)
    if clash:
        raise SystemExit(f"kubehands operator: {clash}")
    kopf.configure(verbose=args.verbose, debug=args.debug)  # sets up logging for kopf and our loggers
    namespaces = [] if args.all_namespaces else (args.namespaces or config.namespaces)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0
