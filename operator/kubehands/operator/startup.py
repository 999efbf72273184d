"""kopf's start-up, login, clean-up and liveness hooks: operator-wide kopf settings and the per-run
resources (configuration, metrics endpoint, API client, culling loop). The settings themselves live in `config`."""

import asyncio
import contextlib
import weakref
from datetime import UTC, datetime
from typing import Any

import kopf

from kubehands.crd import constants
from kubehands.kube import Kube, load_configuration
from kubehands.operator import handlers, metrics
from kubehands.operator.config import OperatorConfig


# kopf passes indexes (`sandbox_bodies`, `sandbox_pods`, ...) as keyword arguments by name, which its handler
# protocols cannot declare: mypy sees an unexpected required argument.
@kopf.on.startup()  # type: ignore[arg-type]  # an index argument: see the comment above
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    logger: kopf.Logger,
    sandbox_bodies: handlers.SandboxIndex,
    sandbox_pods: handlers.SandboxIndex,
    pool_bodies: handlers.PoolIndex,
    pool_claims: handlers.ClaimIndex,
    **_: Any,
) -> None:
    # Storage is chosen on day one: changing it later makes kopf re-handle every existing object.
    settings.persistence.finalizer = constants.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=constants.KOPF_PREFIX, key="last-handled-configuration"
    )
    # Watches silently stall behind some load balancers unless both ends time out (kopf #204, #698).
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 30
    # One replica (chart: replicas 1, strategy Recreate); no KopfPeering objects needed.
    settings.peering.standalone = True
    settings.posting.reporting_component = constants.MANAGED_BY

    # Read per run, not per import, so a test can change the environment between operator runs.
    memo.config = OperatorConfig()
    memo.config.gateway_settings()  # with pool_match_check, wrong gateway settings stop the start here, said plainly
    if memo.config.metrics_port:  # first: a port in use stops the operator before it acts on anything
        try:
            memo.metrics_runner = await metrics.serve(
                memo.config.metrics_host,
                memo.config.metrics_port,
                lambda: metrics.refresh(metrics.iter_bodies(sandbox_bodies), metrics.iter_bodies(pool_bodies)),
            )
        except OSError as e:
            raise kopf.PermanentError(
                f"cannot serve metrics on {memo.config.metrics_host}:{memo.config.metrics_port}: {e}"
            ) from e
    memo.kube = await Kube.connect(memo.config.kubeconfig, memo.config.kube_request_timeout_seconds)
    # One lock per Sandbox serialises handlers, pod events and timers touching it; unused locks vanish.
    memo.locks = weakref.WeakValueDictionary()
    # The same per pool (handlers.PoolGate), and the pool of every unclaimed member seen.
    memo.pool_gates = weakref.WeakValueDictionary()
    memo.pool_members = {}
    memo.pool_tasks = set()  # converges started by member events, referenced until done
    # Indexes are live views, filled as kopf lists and watches; the loop reads them every interval.
    memo.culler = asyncio.create_task(
        handlers.cull_forever(memo, sandbox_bodies, sandbox_pods, pool_bodies, pool_claims), name="culler"
    )
    logger.info("kubehands operator configured: %s", memo.config.model_dump(exclude={"base_resources"}))


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, memo: kopf.Memo | None = None, **_: Any) -> kopf.ConnectionInfo:
    """kopf's own connection, logged in exactly as the operator's API client (`kubehands.kube`): with
    `KUBEHANDS_KUBECONFIG` when it is set, as the gateway does, else in-cluster, else `$KUBECONFIG`.

    kopf's built-in logins read `$KUBECONFIG` through a client library that fixed its default path at
    import; an operator embedded in a process that sets the variable later (tests) would log in with
    the wrong file. kopf logs in after the start-up handlers, so `memo.config` is normally there.
    """
    config = memo.get("config") if memo is not None else None
    configuration = await load_configuration((config or OperatorConfig()).kubeconfig)
    assert configuration.host is not None, "load_configuration always sets the API server's URL"
    # Also runs the configuration's refresh hook, so a rotated service-account token is picked up.
    header = await configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,  # the library's "not set" is an empty string
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,  # the kubeconfig's proxy-url, which our own client also uses
        trust_env=settings.networking.trust_env,
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    tasks = [memo.culler] if "culler" in memo else []
    tasks += list(memo.get("pool_tasks", ()))
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "kube" in memo:
        await memo.kube.close()
    if "metrics_runner" in memo:
        await memo.metrics_runner.cleanup()


@kopf.on.probe(id="now")
def liveness(**_: Any) -> str:
    return datetime.now(UTC).isoformat()
