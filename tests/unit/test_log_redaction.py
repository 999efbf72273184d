"""No key reaches a log line: the redaction of log records (api/kubehands/api/log_redaction.py), and the gateway
served by uvicorn with its own access log, whose lines carry the keys of `?tkn=` and `?session_api_key=` requests
to a sandbox (HTTP and WebSocket) and of a failing upstream's URL."""

import io
import logging
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from uvicorn.logging import AccessFormatter, DefaultFormatter
from websockets.asyncio.client import connect

from kubehands.api import log_redaction
from kubehands.api.cli.gateway import server_limits, uvicorn_options
from kubehands.api.keys import generate_key
from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from tests.helpers.api import offline_gateway, sandbox_object, serve, upstream_app

pytestmark = pytest.mark.unit

RID = "kh-abcdefghij12"
SESSION_KEY = secrets.token_urlsafe(32)  # the shape of every session and init key


@pytest.fixture
def redacting() -> Iterator[None]:
    """The redaction installed for the test, and the process's record factory as it was afterwards."""
    before = logging.getLogRecordFactory()
    log_redaction.install()
    try:
        yield
    finally:
        logging.setLogRecordFactory(before)


def test_every_query_value_is_redacted_and_the_names_kept() -> None:
    assert log_redaction.redact("GET /?tkn=abc&folder=/workspace#x HTTP/1.1") == (
        "GET /?tkn=[redacted]&folder=[redacted]#x HTTP/1.1"
    )
    assert log_redaction.redact("url='http://10.0.0.1:60000/sockets/events/c?session_api_key=k1&resend_all=true'") == (
        "url='http://10.0.0.1:60000/sockets/events/c?session_api_key=[redacted]&resend_all=[redacted]'"
    )
    assert log_redaction.redact("/sessions/batch?ids=a&ids=&flag") == "/sessions/batch?ids=[redacted]&ids=&flag"
    # text that is not a query is left alone
    assert log_redaction.redact("started sandbox kh-abc for key dev: a=b") == "started sandbox kh-abc for key dev: a=b"


def test_key_shaped_words_are_redacted_anywhere() -> None:
    api_key = generate_key()
    assert api_key.startswith("khk_")
    assert log_redaction.redact(f"X-API-Key: {api_key}") == "X-API-Key: khk_[redacted]"
    assert log_redaction.redact(f"{{'x-session-api-key': '{SESSION_KEY}'}}") == "{'x-session-api-key': '[redacted]'}"
    # shorter or longer words (runtime ids, sha256 hex, uuids) are not keys
    for word in ("kh-abcdefghij12", "a" * 64, "0b7c4a8e-9d3f-4b2a-8c1e-5f6a7b8c9d0e", "b" * 42, "c" * 44):
        assert log_redaction.redact(word) == word


def _logger(name: str, formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_records_of_any_logger_are_redacted(redacting: None) -> None:
    # uvicorn's access formatter unpacks the path from the record's arguments: they stay a tuple
    access, access_out = _logger("test.redaction.access", AccessFormatter("%(request_line)s %(status_code)s"))
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/?tkn={SESSION_KEY}", "1.1", 200)
    assert access_out.getvalue() == "GET /?tkn=[redacted] HTTP/1.1 200 OK\n"

    other, out = _logger("test.redaction.other", DefaultFormatter("%(message)s"))
    other.info("upstream %s failed: %s", f"http://10.0.0.1:60001/?tkn={SESSION_KEY}", ValueError(SESSION_KEY))
    other.info(f"a message made with the key in it: ?session_api_key={SESSION_KEY}")
    other.info("numbers keep their format: %d%%", 5)
    try:
        raise RuntimeError(f"GET http://10.0.0.1:60000/x?session_api_key={SESSION_KEY} failed")
    except RuntimeError:
        other.exception("unhandled error")
    text = out.getvalue()
    assert SESSION_KEY not in text, text
    assert "upstream http://10.0.0.1:60001/?tkn=[redacted] failed: [redacted]" in text
    assert "the key in it: ?session_api_key=[redacted]" in text
    assert "numbers keep their format: 5%" in text
    assert "RuntimeError: GET http://10.0.0.1:60000/x?session_api_key=[redacted] failed" in text


def test_install_is_idempotent(redacting: None) -> None:
    factory = logging.getLogRecordFactory()
    log_redaction.install()
    assert logging.getLogRecordFactory() is factory and log_redaction.installed()


@pytest.fixture
async def upstream_port() -> AsyncIterator[int]:
    async with serve(upstream_app()) as port:
        yield port


async def test_the_served_gateway_logs_no_key(upstream_port: int) -> None:
    """The gateway app under uvicorn with its access log on: a sandbox's VS Code first load (`?tkn=`), a browser
    WebSocket (`?session_api_key=`) and a request to an upstream that does not answer. uvicorn configures its
    loggers when it starts; the app installs the redaction when it is created, as under `kubehands gateway`."""
    before = logging.getLogRecordFactory()
    settings = Settings(public_url="http://127.0.0.1:1", activity_interval_seconds=3600)
    gateway = offline_gateway(settings)
    app = create_app(settings)
    app.state.gateway = gateway
    gateway.caches.sandboxes.upsert(sandbox_object(RID, "team-a", "s1", upstream_port, session_key=SESSION_KEY))
    options = uvicorn_options("127.0.0.1", 0, "info", limits=server_limits(settings))
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    try:
        async with serve(app, **options) as port:
            for name in ("uvicorn.access", "uvicorn.error", "kubehands"):
                logging.getLogger(name).addHandler(handler)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                first_load = await http.get(f"/{RID}/vscode/?tkn={SESSION_KEY}&folder=/workspace")
                assert first_load.status_code == 200, first_load.text
                assert first_load.json()["query"] == f"tkn={SESSION_KEY}&folder=/workspace"  # passed on intact
                batch = await http.get(f"/sessions/batch?ids={SESSION_KEY}", headers={"X-API-Key": SESSION_KEY})
                assert batch.status_code == 401
            async with connect(f"ws://127.0.0.1:{port}/{RID}/ws?session_api_key={SESSION_KEY}") as ws:
                assert "session_api_key=" in (await ws.recv())
    finally:
        for name in ("uvicorn.access", "uvicorn.error", "kubehands"):
            logging.getLogger(name).removeHandler(handler)
        logging.setLogRecordFactory(before)
        await gateway.close()
    text = lines.getvalue()
    assert SESSION_KEY not in text, text
    assert f"/{RID}/vscode/?tkn=[redacted]&folder=[redacted]" in text, text
    assert "/sessions/batch?ids=[redacted]" in text, text
    assert f"GET /{RID}/ws?session_api_key=[redacted] HTTP/1.1\" 101" in text, text  # the relayed upgrade
