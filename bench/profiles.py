"""Summaries of cProfile output: top functions by own time, and own time by package (category)."""

import pstats
from typing import Any

# The data plane's modules; and where they were before the gateway was laid out by job (older profiles).
_ROUTER = ("kubehands/api/router/", "kubehands/spec/urls.py")
_ROUTER_BEFORE = ("kubehands/api/proxy.py", "kubehands/api/router.py", "kubehands/api/urls.py")
# (category, path fragments) checked in order; the first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("kubehands router/proxy", _ROUTER + _ROUTER_BEFORE),
    ("kubehands control API", ("kubehands/api/", "kubehands/spec/")),
    ("aiohttp (the router's upstream client)", ("/aiohttp/", "/yarl/", "/multidict/", "/propcache/")),
    ("httpx/httpcore", ("/httpx/", "/httpcore/", "/h11/", "/anyio/")),
    ("uvicorn + httptools (server)", ("/uvicorn/", "httptools")),
    ("starlette/fastapi", ("/starlette/", "/fastapi/")),
    ("pydantic", ("/pydantic/", "pydantic_core")),
    ("logging", ("/logging/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("websockets", ("/websockets/",)),
    ("kubernetes client", ("/kubernetes_asyncio/", "/kubernetes/")),
    ("json", ("/json/", "_json")),
    ("thread pool hand-offs", ("_thread.lock", "/threading.py", "/concurrent/futures/", "run_sync_in_worker_thread")),
    ("asyncio event loop + sockets", ("/asyncio/", "selectors.py", "select.epoll", "socket.py", "ssl.py",
                                      "{method 'send'", "{method 'recv", "{method 'poll'", "epoll")),
]


def categorize(filename: str, function: str) -> str:
    text = f"{filename}:{function}"
    for name, fragments in CATEGORIES:
        if any(fragment in text for fragment in fragments):
            return name
    return "other"


def summarize_profile(path: str, top: int = 15) -> dict[str, Any]:
    """Top functions by own (tot) time, and the share of own time of each category."""
    stats = pstats.Stats(path)
    rows = []
    total = 0.0
    by_category: dict[str, float] = {}
    for (filename, line, function), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if function in ("<module>",) and tottime < 1e-3:
            continue
        total += tottime
        category = categorize(filename, function)
        by_category[category] = by_category.get(category, 0.0) + tottime
        rows.append({"function": f"{_short(filename)}:{line}({function})", "calls": ncalls,
                     "tottime": tottime, "cumtime": cumtime, "category": category})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    # the idle wait in epoll is not work: report it apart and leave it out of the shares
    idle = sum(r["tottime"] for r in rows if "poll" in r["function"] and "epoll" in r["function"])
    busy = total - idle
    shares = sorted(
        ({"category": c, "seconds": s - (idle if c == "asyncio event loop + sockets" else 0.0),
          "share": (s - (idle if c == "asyncio event loop + sockets" else 0.0)) / busy if busy else None}
         for c, s in by_category.items()),
        key=lambda r: r["seconds"], reverse=True,
    )
    return {"busy_seconds": busy, "idle_seconds": idle, "categories": shares,
            "top": [r for r in rows if "epoll" not in r["function"]][:top]}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.12/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
