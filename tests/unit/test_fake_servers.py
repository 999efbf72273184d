"""The fake LLM's and the fake DNS server's protocol logic (tests/helpers/fake_llm.py, fake_dns.py), without a
namespace: what each answers, and the fake LLM over real HTTP on 127.0.0.1. Their use by real agents, through a
network namespace, is tests/node/test_internet.py."""

import json
import struct
import threading
from collections.abc import Iterator
from io import StringIO
from typing import Any

import httpx
import pytest

from tests.helpers import fake_dns, fake_llm

pytestmark = pytest.mark.unit

REQUIRED = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
FINISH = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "", "parameters": parameters}}


def body(*tools: dict[str, Any], tool_result: bool = False, **extra: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]
    if tool_result:
        result = {"role": "tool", "content": [{"type": "text", "text": "x"}]}
        messages += [{"role": "assistant", "content": None}, result]
    return {"model": "kubehands-fake", "messages": messages, "tools": list(tools)} | extra


@pytest.mark.parametrize("terminal", ["terminal", "execute_bash", "bash"])
def test_the_first_answer_runs_the_command_in_the_advertised_terminal_tool(terminal: str) -> None:
    request = body(tool("think", REQUIRED), tool(terminal, REQUIRED), tool("finish", FINISH))
    assert fake_llm.decide(request, "echo hi") == ("tool", {"name": terminal, "arguments": {"command": "echo hi"}})


def test_required_arguments_are_filled_from_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "command": {"type": "string"},
            "security_risk": {"type": "string", "enum": ["UNKNOWN", "LOW", "MEDIUM", "HIGH"]},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "is_input": {"type": "boolean"},
            "timeout": {"type": "number", "default": 30},
            "summary": {"type": "string"},
        },
        "required": ["command", "security_risk", "mode", "is_input", "timeout"],
    }
    kind, answer = fake_llm.decide(body(tool("terminal", schema)), "ls")
    assert kind == "tool" and isinstance(answer, dict)
    filled = {"command": "ls", "security_risk": "LOW", "mode": "a", "is_input": False, "timeout": 30}
    assert answer["arguments"] == filled


def test_a_tool_result_is_answered_with_finish_and_no_tools_with_text() -> None:
    request = body(tool("terminal", REQUIRED), tool("finish", FINISH), tool_result=True)
    assert fake_llm.decide(request, "ls") == ("tool", {"name": "finish", "arguments": {"message": "done"}})
    assert fake_llm.decide(body(), "ls") == ("text", fake_llm.TEXT_ANSWER)
    kind, message = fake_llm.decide(body(tool("finish", FINISH)), "ls")
    assert kind == "error" and "['finish']" in str(message)


def test_streamed_chunks_add_up_to_the_completion() -> None:
    request = body(tool("terminal", REQUIRED), stream=True, stream_options={"include_usage": True})
    kind, answer = fake_llm.decide(request, 'echo "a long command line"')
    full = fake_llm.completion(request, kind, answer)
    chunks = list(fake_llm.chunks(request, full))
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == full["id"] for c in chunks)
    calls = [c["choices"][0]["delta"].get("tool_calls", [{}])[0] for c in chunks if c["choices"]]
    streamed = "".join(call.get("function", {}).get("arguments", "") for call in calls)
    assert streamed == full["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert calls[0]["function"]["name"] == "terminal" and calls[0]["id"].startswith("call_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1] == chunks[-1] | {"choices": [], "usage": full["usage"]}
    assert full["usage"]["total_tokens"] == full["usage"]["prompt_tokens"] + full["usage"]["completion_tokens"]
    no_usage = body(tool("terminal", REQUIRED), stream=True)
    assert all(c["choices"] for c in fake_llm.chunks(no_usage, fake_llm.completion(no_usage, kind, answer)))


@pytest.fixture
def llm_server() -> Iterator[tuple[str, StringIO]]:
    log = StringIO()
    server = fake_llm.FakeLLMServer(("127.0.0.1", 0), "echo hi", log, api_key="key")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_server_speaks_openai_http(llm_server: tuple[str, StringIO]) -> None:
    url, log = llm_server
    auth = {"Authorization": "Bearer key"}
    with httpx.Client(base_url=url, headers=auth, trust_env=False, timeout=10) as http:
        assert http.get("/v1/models").json()["data"][0]["id"] == fake_llm.MODEL
        assert httpx.get(f"{url}/v1/models", trust_env=False).status_code == 401
        missing = http.post("/v1/embeddings", json={})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

        plain = http.post("/v1/chat/completions", json=body(tool("terminal", REQUIRED)))
        call = plain.json()["choices"][0]["message"]["tool_calls"][0]["function"]
        assert (call["name"], json.loads(call["arguments"])) == ("terminal", {"command": "echo hi"})

        request = body(tool("terminal", REQUIRED), tool("finish", FINISH), tool_result=True, stream=True)
        with http.stream("POST", "/v1/chat/completions", json=request) as streamed:
            assert streamed.headers["content-type"] == "text/event-stream"
            events = [line.removeprefix("data: ") for line in streamed.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    arguments = "".join(
        c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
        for c in map(json.loads, events[:-1])
    )
    assert json.loads(arguments) == {"message": "done"}
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [(e["method"], e["status"]) for e in logged] == [("GET", 200), ("GET", 401), ("POST", 404), ("POST", 200),
                                                            ("POST", 200)]  # fmt: skip
    assert logged[-1]["tool_results"] == ["x"] and logged[-1]["stream"] is True


def dns_query(name: str, qtype: int = fake_dns.TYPE_A, qid: int = 0x1234, flags: int = 0x0100, count: int = 1) -> bytes:
    question = fake_dns._encode_name(name) + struct.pack("!HH", qtype, fake_dns.CLASS_IN)
    return fake_dns.HEADER.pack(qid, flags, count, 0, 0, 0) + question


RECORDS = {"llm.kubehands.test": "203.0.113.10"}


def test_dns_answers_a_known_name_authoritatively_and_echoes_the_question() -> None:
    query = dns_query("LLM.KubeHands.test")
    response, result = fake_dns.answer(query, RECORDS)
    qid, flags, qd, an, ns, ar = fake_dns.HEADER.unpack_from(response)
    assert (qid, qd, an, ns, ar) == (0x1234, 1, 1, 0, 0)
    assert flags == 0x8000 | 0x0400 | 0x0100  # QR, AA, RD echoed; NOERROR
    assert response[12 : len(query)] == query[12:], "the question, case and all"
    assert response[len(query) :] == struct.pack("!HHHIH", 0xC00C, 1, 1, fake_dns.TTL, 4) + bytes([203, 0, 113, 10])
    assert result == fake_dns.Answer("LLM.KubeHands.test", 1, 0, ["203.0.113.10"])
    # a forwarder's query with an EDNS OPT record: answered alike, without one (the server does not do EDNS)
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    edns = query[:10] + struct.pack("!H", 1) + query[12:] + opt
    assert fake_dns.answer(edns, RECORDS)[0] == response


@pytest.mark.parametrize(
    ("name", "qtype", "rcode"),
    [
        ("llm.kubehands.test", fake_dns.TYPE_AAAA, fake_dns.NOERROR),
        ("llm.kubehands.test", 15, fake_dns.NOERROR),  # MX
        ("other.kubehands.test", fake_dns.TYPE_A, fake_dns.NXDOMAIN),
        ("kubehands.test", fake_dns.TYPE_A, fake_dns.NXDOMAIN),
    ],
)
def test_dns_answers_nothing_else(name: str, qtype: int, rcode: int) -> None:
    response, _ = fake_dns.answer(dns_query(name, qtype), RECORDS)
    _, flags, qd, an, _, _ = fake_dns.HEADER.unpack_from(response)
    assert (flags & 0xF, qd, an) == (rcode, 1, 0)


def test_dns_refuses_what_it_does_not_understand() -> None:
    assert fake_dns.HEADER.unpack_from(fake_dns.answer(dns_query("a.test", count=2), RECORDS)[0])[1] & 0xF == 1
    notimp = fake_dns.answer(dns_query("a.test", flags=2 << 11), RECORDS)[0]  # opcode 2: STATUS
    assert fake_dns.HEADER.unpack_from(notimp)[1] & 0xF == fake_dns.NOTIMP
    assert fake_dns.answer(dns_query("a.test", flags=0x8000), RECORDS) == (b"", None), "a response is never answered"
    assert fake_dns.answer(b"\x00\x01", RECORDS) == (b"", None)
    truncated = dns_query("llm.kubehands.test")[:-3]
    assert fake_dns.HEADER.unpack_from(fake_dns.answer(truncated, RECORDS)[0])[1] & 0xF == fake_dns.FORMERR
