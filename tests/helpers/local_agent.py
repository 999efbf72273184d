"""Run a real OpenHands agent (a local `Conversation`, terminal tool) in a client virtualenv against an LLM URL.

The flow runs unchanged in both client venvs (`hack/client-venvs.sh sdk`: openhands-sdk 1.58.2; `app`: the SDK
1.34.0 that openhands-ai 1.11 bundles), as a subprocess of the venv's python, usually inside a
`TestInternet.client()` namespace. It runs two conversations, one with a plain and one with a streaming LLM
(`stream=True` and a token callback), each `send_message` + `run()`, and prints one `AGENT-RESULT {json}` line
for each: execution status, event kinds, the observations' tool and text, streamed chunks, token usage.

`agent_env` is what the agent needs to stay offline, each entry for a reason (none of it is network config:
the namespace provides that):
- `LITELLM_LOCAL_MODEL_COST_MAP=True`: litellm fetches its model price map from GitHub at import otherwise;
- `OPENHANDS_SUPPRESS_BANNER=1`: quiet output (the banner makes no request);
- no `*_proxy` variables: the LLM is called directly;
- `HOME` and `TMPDIR` in the test's folder: the SDK's user state (`~/.openhands`, the shell's history) stays out of
  the real home and /tmp;
- `TMUX_TMPDIR` in a short folder of its own under ~/.cache/kubehands, removed afterwards: the terminal tool's tmux
  sockets go there, and SDK 1.58.2 puts them in /tmp instead when `$TMUX_TMPDIR/tmux-0/openhands-<32 hex>` is longer
  than a socket path may be (107 bytes), which any path under a pytest `tmp_path` is.
"""

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers.paths import CACHE

ROOT = Path(__file__).resolve().parents[2]
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with its NUL
RESULT = "AGENT-RESULT "
USER_MESSAGE = "Run the command you are given, then finish."

FLOW = r"""
import json, sys
from openhands.sdk import LLM, Agent, Conversation
from openhands.sdk.event import ObservationEvent
from openhands.sdk.tool import Tool
from openhands.tools.terminal import TerminalTool

base_url, api_key, model, workspace, message = sys.argv[1:6]
for stream in (False, True):
    chunks = []
    llm = LLM(model=model, base_url=base_url, api_key=api_key, usage_id="stream" if stream else "plain",
              stream=stream, num_retries=0, timeout=60)
    agent = Agent(llm=llm, tools=[Tool(name=TerminalTool.name)])
    conversation = Conversation(agent=agent, workspace=workspace, visualizer=None, max_iteration_per_run=10,
                                token_callbacks=[chunks.append] if stream else None)
    try:
        conversation.send_message(message)
        conversation.run()
        events = list(conversation.state.events)
        usage = conversation.conversation_stats.get_combined_metrics().accumulated_token_usage
        result = {
            "stream": stream,
            "status": conversation.state.execution_status.value,
            "events": [type(e).__name__ for e in events],
            "observations": [
                {"tool": e.tool_name, "text": "".join(getattr(c, "text", "") for c in e.observation.to_llm_content)}
                for e in events if isinstance(e, ObservationEvent)
            ],
            "chunks": len(chunks),
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }
    finally:
        conversation.close()
    print("AGENT-RESULT " + json.dumps(result), flush=True)
"""


def client_python(kind: str) -> str:
    """The python of a client venv: `sdk` (openhands-sdk 1.58.2) or `app` (openhands-ai 1.11: SDK 1.34.0)."""
    made = subprocess.run([str(ROOT / "hack" / "client-venvs.sh"), kind], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-4000:]
    return made.stdout.strip().splitlines()[-1]


def agent_command(python: str, base_url: str, api_key: str, model: str, workspace: Path) -> list[str]:
    return [python, "-c", FLOW, base_url, api_key, model, str(workspace), USER_MESSAGE]


@contextmanager
def agent_env(folder: Path) -> Iterator[dict[str, str]]:
    """The client's environment: the caller's without proxies, with its state in `folder` and its tmux sockets in a
    short folder removed on exit (see the docstring)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    for sub in ("home", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmux = tempfile.mkdtemp(prefix="tmux-", dir=CACHE)
    try:
        longest = Path(tmux, f"tmux-{os.getuid()}", f"openhands-{'0' * 32}")
        assert len(os.fsencode(longest)) <= SOCKET_PATH_MAX, f"{tmux} is too long for tmux sockets"
        yield env | {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENHANDS_SUPPRESS_BANNER": "1",
            "HOME": str(folder / "home"),
            "TMPDIR": str(folder / "tmp"),
            "TMUX_TMPDIR": tmux,
        }
    finally:
        shutil.rmtree(tmux, ignore_errors=True)


def agent_results(output: str) -> list[dict[str, Any]]:
    """The `AGENT-RESULT` objects the flow printed, in order."""
    return [json.loads(line[len(RESULT) :]) for line in output.splitlines() if line.startswith(RESULT)]
