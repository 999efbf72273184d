"""A real agent session end to end: the agent, inside its sandbox pod, resolves and calls an OpenAI-compatible LLM
and runs the command the LLM asks for, through both clients against `make run`'s settings.

The LLM is the fake one of the stand-in internet (tests/helpers/internet.py: `llm.kubehands.test`, a network
namespace on this machine): it answers with a call of the terminal tool running `echo agent-ran-$((6*7))`, then
with `finish`. The cluster's sandbox egress lets pods reach that namespace alone, its DNS server resolving the
name (tests/helpers/egress.py); nothing leaves the machine. One short turn per client:

- the OpenHands app server (openhands-ai 1.11, its LLM settings pointing at the fake LLM) starts a conversation
  with an initial message; it reaches `finished` and the app reads the command's output among its events;
- the SDK (openhands-sdk 1.58.2): a `Conversation` on an `APIRemoteWorkspace`, `send_message` + `run()`.
"""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import egress
from tests.helpers.fake_llm import DEFAULT_OUTPUT
from tests.helpers.internet import TestInternet
from tests.helpers.live_app import AppServer, LiveGateway
from tests.helpers.local_agent import agent_env, client_python
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]
MESSAGE = "Run the command you are given, then finish."

# The SDK's agent in a sandbox: one turn, then what the client sees of it. argv: runtime API URL and key, image,
# session id, LLM base URL, key and model, message.
SDK_FLOW = r"""
import json, sys
from openhands.sdk import LLM, Agent, Conversation
from openhands.sdk.event import ObservationEvent
from openhands.sdk.tool import Tool
from openhands.tools.terminal import TerminalTool
from openhands.workspace import APIRemoteWorkspace

url, key, image, session, base_url, api_key, model, message = sys.argv[1:9]
workspace = APIRemoteWorkspace(
    runtime_api_url=url, runtime_api_key=key, server_image=image, image_pull_policy="Never",
    session_id=session, init_timeout=60, startup_wait_timeout=240, api_timeout=120,
)
try:
    llm = LLM(model=model, base_url=base_url, api_key=api_key, usage_id="agent", num_retries=0, timeout=60)
    agent = Agent(llm=llm, tools=[Tool(name=TerminalTool.name)])
    conversation = Conversation(agent=agent, workspace=workspace, visualizer=None, max_iteration_per_run=10)
    try:
        conversation.send_message(message)
        conversation.run()
        events = list(conversation.state.events)
        result = {
            "status": conversation.state.execution_status.value,
            "events": [type(e).__name__ for e in events],
            "observations": [
                {"tool": e.tool_name, "text": "".join(getattr(c, "text", "") for c in e.observation.to_llm_content)}
                for e in events if isinstance(e, ObservationEvent)
            ],
        }
    finally:
        conversation.close()
    print("SDK-AGENT-RESULT " + json.dumps(result), flush=True)
finally:
    workspace.cleanup()
"""


@pytest.fixture(scope="module", autouse=True)
def internet(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestInternet]:
    """The stand-in internet, the only place sandboxes may reach while these tests run (autouse: it is there
    before the module's gateway and app server, tests/node/conftest.py)."""
    with TestInternet(tmp_path_factory.mktemp("internet")) as net, egress.sandbox_egress(egress.TEST_INTERNET):
        yield net


def test_app_conversation_runs_a_command_through_the_llm(
    app_server: AppServer, live_gateway: LiveGateway, internet: TestInternet
) -> None:
    stored = app_server.http.post("/api/v1/settings", json={"agent_settings_diff": {"llm": {
        "model": internet.llm_model, "api_key": internet.llm_api_key, "base_url": internet.llm_base_url}}})
    assert stored.status_code == 200, stored.text
    calls_before, forwarded_before = len(internet.llm_completions()), egress.forwarded_from_pods()
    began = time.monotonic()
    task = app_server.http.post("/api/v1/app-conversations", json={
        "initial_message": {"content": [{"type": "text", "text": MESSAGE}], "run": True}})
    assert task.status_code == 200, task.text

    def start_task() -> dict[str, Any] | None:
        tasks = app_server.http.get("/api/v1/app-conversations/start-tasks", params={"ids": task.json()["id"]})
        current: dict[str, Any] = tasks.json()[0]
        return current if current["status"] in ("READY", "ERROR") else None

    started = wait_for(start_task, 300, "the conversation start task to be READY", interval=1.0)
    assert started["status"] == "READY", started
    conversation_id = started["app_conversation_id"]

    def ended() -> dict[str, Any] | None:
        items = app_server.http.get("/api/v1/app-conversations", params={"ids": conversation_id}).json()
        ended = items[0] is not None and items[0].get("execution_status") in ("finished", "error", "stuck")
        return items[0] if ended else None

    conversation = wait_for(ended, 300, "the app's conversation to finish", interval=1.0)
    assert conversation["execution_status"] == "finished", conversation
    print(f"app conversation finished {time.monotonic() - began:.1f}s after its POST")
    # The app stores its conversation's events as its poller reads them from the agent server (every 15 s: no
    # webhooks with an app on localhost), then serves them from its own store.
    def events_with_output() -> str | None:
        events = app_server.http.get(f"/api/v1/conversation/{conversation_id}/events/search", params={"limit": 100})
        assert events.status_code == 200, events.text
        text = json.dumps(events.json())
        return text if DEFAULT_OUTPUT in text else None

    text = wait_for(events_with_output, 120, "the app to show the command's output among its events", interval=2.0)
    assert "ObservationEvent" in text and "terminal" in text, text[-4000:]
    assert_called_from_a_pod(internet, calls_before, forwarded_before)


def test_sdk_conversation_runs_a_command_through_the_llm(
    live_gateway: LiveGateway, agent_server_image: str, internet: TestInternet, tmp_path: Path
) -> None:
    calls_before, forwarded_before = len(internet.llm_completions()), egress.forwarded_from_pods()
    command = [client_python("sdk"), "-c", SDK_FLOW, live_gateway.url, live_gateway.key, agent_server_image,
               "sdk-agent-turn", internet.llm_base_url, internet.llm_api_key, internet.llm_model, MESSAGE]
    with agent_env(tmp_path) as env:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("SDK-AGENT-RESULT "))
                        .removeprefix("SDK-AGENT-RESULT "))
    assert result["status"] == "finished", result
    assert any(o["tool"] == "terminal" and DEFAULT_OUTPUT in o["text"] for o in result["observations"]), result
    assert_called_from_a_pod(internet, calls_before, forwarded_before)


def assert_called_from_a_pod(internet: TestInternet, calls_before: int, forwarded_before: int) -> None:
    """The turn's LLM calls (a terminal call, then finish) came through the cluster's egress, from the sandbox:
    the host forwarded pod traffic to the stand-in internet meanwhile (a process on this host would not be
    forwarded, and could not resolve the LLM's name), and that namespace sent nothing anywhere else."""
    calls = internet.llm_completions()[calls_before:]
    assert len(calls) >= 2, calls
    answered = [c["answer"]["tool"] for c in calls if c.get("status") == 200 and isinstance(c.get("answer"), dict)]
    assert answered[:1] == ["terminal"] and answered[-1:] == ["finish"], calls
    assert egress.forwarded_from_pods() > forwarded_before
    assert internet.blocked_packets() == 0
