"""The router's HTTP client to sandbox pods: one aiohttp session, created on first use (it needs the
running loop).

aiohttp rather than httpx for proxying because it keeps a connection pool per host and parses in C,
so a request's cost does not grow with the number of pooled connections; httpx serves the /alive checks.
"""

import aiohttp

from kubehands.api.settings import Settings


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._settings.proxy_connect_timeout_seconds,
                    sock_read=self._settings.proxy_read_timeout_seconds,
                ),
                auto_decompress=False,  # bodies pass through as the sandbox encoded them
                cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no cookies between clients
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),  # forward only what came in
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
