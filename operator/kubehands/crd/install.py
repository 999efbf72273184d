"""Install CustomResourceDefinitions: create or replace each one, then wait until it is Established.

    python -m kubehands.crd.install [--kubeconfig PATH] [--timeout SECONDS] crds/*.yaml

`make run` (hack/run.sh), the benchmarks (bench/system.py) and the test fixtures use it. Helm
installs the chart's copy of the CRDs on a real cluster instead (docs/install.md).

A CRD is only usable once the API server reports it Established: creating a Sandbox right after
the create call can still get 404, so callers get control back only after that condition.
"""

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

KIND = "CustomResourceDefinition"
DEFAULT_TIMEOUT = 60.0
POLL_INTERVAL = 0.2


class CrdApi(Protocol):
    """The part of `kubernetes.client.ApiextensionsV1Api` used here (a fake in the unit tests).

    `body` is a CRD as a plain JSON dict, which the client sends as it is; it is `Any` here because the
    client's annotations name only its model class (`V1CustomResourceDefinition`).
    """

    def read_custom_resource_definition(self, name: str) -> Any: ...
    def create_custom_resource_definition(self, body: Any) -> Any: ...
    def replace_custom_resource_definition(self, name: str, body: Any) -> Any: ...


def load_crds(files: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CRD document in `files`, in order. Anything else is an error, found before any API call."""
    docs: list[dict[str, Any]] = []
    for path in files:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc:
                continue
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                raise ValueError(f"{path}: expected kind {KIND}, found {kind!r}")
            if not (doc.get("metadata") or {}).get("name"):
                raise ValueError(f"{path}: a {KIND} without metadata.name")
            docs.append(doc)
    if not docs:
        raise ValueError("no CustomResourceDefinition in the given files")
    return docs


def is_established(crd: Any) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def apply(ext: CrdApi, docs: Sequence[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Create or replace each CRD, then wait until all are Established; return their names.

    Raises TimeoutError naming the CRDs still not Established (and the last error) after `timeout`.
    """
    names: list[str] = []
    for original in docs:
        doc = dict(original, metadata=dict(original["metadata"]))  # the caller's documents stay untouched
        name = doc["metadata"]["name"]
        names.append(name)
        try:
            current = ext.read_custom_resource_definition(name)
        except ApiException as e:
            if e.status != 404:
                raise
            ext.create_custom_resource_definition(doc)
            continue
        # replace needs the current resourceVersion (optimistic concurrency)
        doc["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, doc)

    deadline = time.monotonic() + timeout
    waiting = list(names)
    last: object = None
    while True:
        still: list[str] = []
        for name in waiting:
            try:
                if is_established(ext.read_custom_resource_definition(name)):
                    continue
            except (ApiException, HTTPError) as e:  # e.g. a read that races the create: retried
                last = e
            still.append(name)
        waiting = still
        if not waiting:
            return names
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"CRDs not Established after {timeout:g}s: {', '.join(waiting)}"
                + (f" (last error: {last!r})" if last is not None else "")
            )
        time.sleep(POLL_INTERVAL)


def apply_crds(kubeconfig: str | None, files: Iterable[Path], timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """`apply` the CRDs in `files` through the cluster that `kubeconfig` names.

    kubeconfig None means the client's default: $KUBECONFIG, else ~/.kube/config.
    """
    docs = load_crds(files)
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        return apply(client.ApiextensionsV1Api(api), docs, timeout)
    finally:
        api.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kubehands.crd.install",
        description="Create or replace CustomResourceDefinitions and wait until they are Established.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML files of CRDs")
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig path (default: $KUBECONFIG, else ~/.kube/config)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds to wait (default {DEFAULT_TIMEOUT:g})"
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names = apply_crds(args.kubeconfig, args.files, args.timeout)
    except (ValueError, OSError, yaml.YAMLError, config.ConfigException) as e:  # OSError covers TimeoutError
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ApiException as e:
        print(f"error: the API server answered {e.status} {e.reason}: {e.body}", file=sys.stderr)
        return 1
    print(f"established: {', '.join(names)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
