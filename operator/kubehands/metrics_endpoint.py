"""GET /metrics on a port of its own, in the running event loop: the operator's and the gateway's Prometheus
endpoint (never the gateway's public port). One aiohttp runner; the caller cleans it up."""

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


async def serve(
    host: str, port: int, registry: CollectorRegistry, before_scrape: Callable[[], None]
) -> web.AppRunner:
    """Serve `registry` at http://host:port/metrics, calling `before_scrape` first (gauges computed at scrape
    time). Raises OSError when the port is taken, after releasing what it set up."""

    async def metrics(_: web.Request) -> web.Response:
        before_scrape()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    return runner
