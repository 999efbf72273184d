"""An OpenAI-compatible chat-completions server that drives a real OpenHands agent through one command.

Tests need an LLM that a real agent (openhands-sdk 1.58.2, and 1.34.0 inside the app) can call over the network
without leaving the machine, and whose answers are known. Each request is answered on its own (no state):

- the request advertises a terminal tool (`terminal`, or the older `execute_bash` / `bash`) and no message has the
  `tool` role yet: one call of that tool running the configured command (`{"command": ...}` plus any argument the
  tool's schema requires, filled from the schema: an enum takes "LOW" if it has it, else its first value);
- there is a tool result already: one call of `finish` (`{"message": "done"}`, same rule for required fields);
- no tools at all (a title or summary request): a short text answer;
- tools but no terminal tool: HTTP 400 in OpenAI's error format, naming the tools it saw.

`stream: true` is answered with server-sent events in OpenAI's chunk format (role, tool-call name, arguments in
pieces, finish reason, a usage chunk when `stream_options.include_usage` asks for it, `data: [DONE]`). Each answer
carries a `usage` block counted from the request's size. `GET /v1/models` lists the model; other paths are 404 in
JSON. Each request served is logged as one JSON line (what it asked, what it got), so a test can prove that the
agent really called this server and what it sent back (the tool results).

It is stdlib only and runs with a plain `python` inside a network namespace:

    python fake_llm.py --host 203.0.113.10 --port 8000 --command 'echo agent-ran-$((6*7))' --log llm.jsonl
"""

import argparse
import json
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

DEFAULT_COMMAND = "echo agent-ran-$((6*7))"
DEFAULT_OUTPUT = "agent-ran-42"  # what DEFAULT_COMMAND prints; its text does not contain it
MODEL = "kubehands-fake"
TERMINAL_TOOLS = ("terminal", "execute_bash", "bash")
FINISH_TOOL = "finish"
FINISH_MESSAGE = "done"
TEXT_ANSWER = "kubehands fake LLM"

Json = dict[str, Any]


def tool_schemas(body: Json) -> dict[str, Json]:
    """The advertised tools' parameter schemas by name (OpenAI's `tools` list; the older `functions` too)."""
    tools = [t.get("function", {}) for t in body.get("tools") or []] + list(body.get("functions") or [])
    return {t["name"]: t.get("parameters") or {} for t in tools if isinstance(t, dict) and "name" in t}


def _filler(schema: Json) -> Any:
    if "enum" in schema:
        return "LOW" if "LOW" in schema["enum"] else schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    return {"boolean": False, "integer": 1, "number": 1, "array": [], "object": {}}.get(str(kind), "fake")


def arguments(schema: Json, given: Json) -> Json:
    """`given`, plus a value for each other property the schema requires."""
    properties = schema.get("properties") or {}
    filled = dict(given)
    for name in schema.get("required") or []:
        filled.setdefault(name, _filler(properties.get(name) or {}))
    return filled


def _text(content: Any) -> str:
    """A message's content as text (a string, or a list of parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def decide(body: Json, command: str) -> tuple[str, Json | str]:
    """What to answer: ("tool", {"name", "arguments"}), ("text", text) or ("error", message)."""
    tools = tool_schemas(body)
    if not tools:
        return "text", TEXT_ANSWER
    if any(m.get("role") == "tool" for m in body.get("messages") or []):
        if FINISH_TOOL in tools:
            finish = arguments(tools[FINISH_TOOL], {"message": FINISH_MESSAGE})
            return "tool", {"name": FINISH_TOOL, "arguments": finish}
        return "text", FINISH_MESSAGE
    terminal = next((name for name in TERMINAL_TOOLS if name in tools), None)
    if terminal is None:
        return "error", f"no terminal tool among the advertised tools {sorted(tools)}"
    return "tool", {"name": terminal, "arguments": arguments(tools[terminal], {"command": command})}


def usage(body: Json, completion: str) -> Json:
    """Token counts as a tokenizer would roughly give them (4 characters a token)."""
    prompt = max(1, len(json.dumps(body.get("messages") or [])) // 4 + len(json.dumps(body.get("tools") or [])) // 4)
    done = max(1, len(completion) // 4)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": done,
        "total_tokens": prompt + done,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def completion(body: Json, kind: str, answer: Json | str) -> Json:
    """The non-streaming `chat.completion` object."""
    message: Json = {"role": "assistant", "content": None, "refusal": None}
    if kind == "tool":
        assert isinstance(answer, dict)
        args = json.dumps(answer["arguments"])
        function = {"name": answer["name"], "arguments": args}
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}]
        finish, produced = "tool_calls", args
    else:
        message["content"] = produced = str(answer)
        finish = "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or MODEL,
        "system_fingerprint": "fp_kubehands",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(body, produced),
    }


def chunks(body: Json, full: Json) -> Iterator[Json]:
    """`full` as the `chat.completion.chunk` objects OpenAI streams for it."""
    base = {k: full[k] for k in ("id", "created", "model", "system_fingerprint")} | {"object": "chat.completion.chunk"}
    choice, message = full["choices"][0], full["choices"][0]["message"]

    def chunk(delta: Json, finish: str | None = None) -> Json:
        return base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        args = call["function"]["arguments"]
        function = {"name": call["function"]["name"], "arguments": ""}
        head = {"index": 0, "id": call["id"], "type": "function", "function": function}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [head]})
        for start in range(0, len(args), 16):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[start : start + 16]}}]})
    else:
        yield chunk({"role": "assistant", "content": ""})
        text = message["content"]
        for start in range(0, len(text), 8):
            yield chunk({"content": text[start : start + 8]})
    yield chunk({}, choice["finish_reason"])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield base | {"choices": [], "usage": full["usage"]}


class _Handler(BaseHTTPRequestHandler):
    server: "FakeLLMServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the JSON request log replaces http.server's lines
        pass

    def _path(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path[3:] if path.startswith("/v1/") else path

    def _send_json(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str, code: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def _authorized(self) -> bool:
        key = self.server.api_key
        return not key or self.headers.get("Authorization", "") == f"Bearer {key}"

    def do_GET(self) -> None:
        if self._path() != "/models":
            self._error(404, f"unknown path {self.path}", "invalid_request_error", "not_found")
            self.server.record(self._entry() | {"status": 404})
            return
        if not self._authorized():
            self._error(401, "invalid api key", "invalid_request_error", "invalid_api_key")
            self.server.record(self._entry() | {"status": 401})
            return
        model = {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "kubehands"}
        self._send_json(200, {"object": "list", "data": [model]})
        self.server.record(self._entry() | {"status": 200})

    def _entry(self) -> Json:
        return {"client": self.client_address[0], "method": self.command, "path": self.path}

    def do_POST(self) -> None:
        body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = self._entry()
        if self._path() != "/chat/completions":
            self._error(404, f"unknown path {self.path}", "invalid_request_error", "not_found")
            self.server.record(entry | {"status": 404})
            return
        if not self._authorized():
            self._error(401, "invalid api key", "invalid_request_error", "invalid_api_key")
            self.server.record(entry | {"status": 401})
            return
        try:
            body = json.loads(body_bytes or b"{}")
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            self._error(400, "the body is not a JSON object", "invalid_request_error", "invalid_json")
            self.server.record(entry | {"status": 400})
            return
        messages = body.get("messages") or []
        entry |= {
            "model": body.get("model"),
            "stream": bool(body.get("stream")),
            "tools": sorted(tool_schemas(body)),
            "roles": [m.get("role") for m in messages],
            "tool_results": [_text(m.get("content")) for m in messages if m.get("role") == "tool"],
        }
        kind, answer = decide(body, self.server.command)
        if kind == "error":
            self._error(400, str(answer), "invalid_request_error", "no_terminal_tool")
            self.server.record(entry | {"status": 400, "answer": str(answer)})
            return
        full = completion(body, kind, answer)
        if body.get("stream"):
            self._stream(body, full)
        else:
            self._send_json(200, full)
        said = {"tool": answer["name"], "arguments": answer["arguments"]} if isinstance(answer, dict) else answer
        self.server.record(entry | {"status": 200, "answer": said, "usage": full["usage"]})

    def _stream(self, body: Json, full: Json) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [f"data: {json.dumps(c)}\n\n" for c in chunks(body, full)] + ["data: [DONE]\n\n"]
        for event in events:
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class FakeLLMServer(ThreadingHTTPServer):
    """The server; `record` appends one line to the request log."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], command: str, log: IO[str], api_key: str = "") -> None:
        self.command = command
        self.api_key = api_key
        self._log = log
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address (a server here never sends a query)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def record(self, entry: Json) -> None:
        line = {"time": round(time.time(), 3)} | entry
        with self._lock:
            self._log.write(json.dumps(line) + "\n")
            self._log.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="what the agent is told to run")
    parser.add_argument("--api-key", default="", help="require `Authorization: Bearer KEY` (default: any)")
    parser.add_argument("--log", help="append one JSON line per request here (default: stderr)")
    args = parser.parse_args(argv)
    log = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr  # open as long as we run
    FakeLLMServer((args.host, args.port), args.command, log, args.api_key).serve_forever()


if __name__ == "__main__":
    main()
