"""An offline gateway (no API server; the test names its sandboxes) served with `kubehands gateway`'s options
in a process of its own, so that a test can attack it and measure its memory.

`python -m tests.helpers.offline_gateway_main '{"settings": {...}, "sandboxes": {"<runtime id>": <port>}}'`
prints `port <n>` once every sandbox's /alive check has passed, and serves until SIGTERM."""

import asyncio
import json
import signal
import sys

from kubehands.api.settings import Settings
from tests.helpers.api import sandbox_object, serve_gateway


async def main(spec: dict) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with serve_gateway(Settings(**spec.get("settings", {}))) as (gateway, port):
        for runtime_id, upstream_port in spec.get("sandboxes", {}).items():
            gateway.caches.sandboxes.upsert(sandbox_object(runtime_id, "team-a", runtime_id, upstream_port))
        async with asyncio.timeout(30):
            for runtime_id in spec.get("sandboxes", {}):
                while not gateway.alive.is_alive(gateway.caches.sandbox(runtime_id)):
                    await gateway.caches.sandboxes.wait_changed(0.5)
        print(f"port {port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
