"""Keys never reach a log line: every log record of the gateway's process is redacted as it is made.

Two rules, applied to the message, its arguments, its traceback and its stack:

- **Every query parameter's value** (`?tkn=…&x=…` → `?tkn=[redacted]&x=[redacted]`; the names stay). uvicorn's
  access log and its WebSocket lines print the path with its query, and exceptions of HTTP clients print URLs.
  All values, not a list of names: most query strings the gateway sees are sandbox traffic, whose parameters the
  code in the sandbox chooses (VS Code's `tkn`, the agent server's `session_api_key`, and any name at all of a
  user's app on a work port), so no list of names could be complete.
- **Every word shaped like a key kubehands mints**: API keys (`khk_…`), and 43-character urlsafe words, the shape
  of `secrets.token_urlsafe(32)`, which session keys and warm-pool init keys are. This catches a key wherever it
  appears (an exception quoting a header, a repr of a request), not only in a query.

Installed as the process's log record factory (`install()`, from `create_app`), so it applies to every logger
(uvicorn's access and error logs, the gateway's own, aiohttp's, asyncio's) however the app is served:
`kubehands gateway` or `uvicorn --factory kubehands.api.main:create_app`.
"""

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

REDACTED = "[redacted]"
# `?name=value` or `&name=value`: the value runs to the next separator, fragment, space or quote.
_QUERY_VALUE = re.compile(r"([?&][^=&#?\s\"'<>]*=)[^&#\s\"'<>]+")
_API_KEY = re.compile(r"khk_[A-Za-z0-9_-]+")
_TOKEN_URLSAFE_32 = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def redact(text: str) -> str:
    """`text` with query values and key-shaped words replaced by `[redacted]`."""
    text = _QUERY_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _API_KEY.sub("khk_" + REDACTED, text)
    return _TOKEN_URLSAFE_32.sub(REDACTED, text)


def _redact_arg(arg: Any) -> Any:
    """An argument whose text holds a secret becomes its redacted text; any other is left as it is (numbers
    keep their `%d`)."""
    if arg is None or isinstance(arg, (bool, int, float)):
        return arg
    text = str(arg)
    redacted = redact(text)
    return arg if redacted == text else redacted


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record in place. Arguments are redacted one by one where that suffices, so that formatters that
    read them (uvicorn's access formatter unpacks the path from `args`) still find them; otherwise the message is
    rendered, redacted and left without arguments."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it when it is emitted; leave it as it is
        message = None
    if message is not None and redact(message) != message:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {name: _redact_arg(value) for name, value in record.args.items()}
        if record.getMessage() != redact(message):  # the format string itself holds a secret
            record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        redacted = redact(text)
        if redacted != text:
            record.exc_text = redacted  # formatters print exc_text rather than formatting the exception again
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class _RedactingFactory:
    """Wraps the record factory in place: every record is redacted once it is made."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        redact_record(record)
        return record


def install() -> None:
    """Redact every log record of this process from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(factory))


def installed() -> bool:
    return isinstance(logging.getLogRecordFactory(), _RedactingFactory)
