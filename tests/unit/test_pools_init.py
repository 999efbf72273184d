"""What a claimed member's dormant agent server is told: the environment a cold pod would have (Kubernetes'
`$(VAR)` expansion included), mapped to the agent server's InitRequest; and how POST /api/init fails when
the pod hangs or is gone."""

import asyncio
from typing import Any

import pytest

from kubehands.api.gateway import Gateway
from kubehands.api.keys import KeyRecord
from kubehands.api.pools import init as pools
from kubehands.api.settings import Settings
from kubehands.spec import objects
from kubehands.spec.request import StartRequest
from tests.helpers.api import offline_gateway

pytestmark = pytest.mark.unit

RID = "kh-0123456789ab"
KEY = "the-session-key"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("/$(RUNTIME_ID)/vscode", f"/{RID}/vscode"),
        ("$(RUNTIME_ID)$(RUNTIME_ID)", RID + RID),
        ("$$(RUNTIME_ID)", "$(RUNTIME_ID)"),  # escaped
        ("$$$(RUNTIME_ID)", f"${RID}"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # unknown references stay
        ("$(RUNTIME_ID", "$(RUNTIME_ID"),  # unterminated
        ("cost $5", "cost $5"),
        ("trailing $", "trailing $"),
        ("$(EARLIER)-x", "first-x"),
    ],
)
def test_expand_is_kubernetes_expansion(value: str, expected: str) -> None:
    assert pools.expand(value, {"RUNTIME_ID": RID, "EARLIER": "first"}) == expected


def test_pod_environment_is_what_the_operator_and_kubernetes_give_a_cold_pod() -> None:
    request = StartRequest.model_validate(
        {
            "image": "ghcr.io/openhands/agent-server:1.58.2-python",
            "session_id": "S1",
            "environment": {"A": "1", "B": "$(A)-$(RUNTIME_ID)", "SESSION_API_KEY": "smuggled"},
        }
    )
    caller = KeyRecord(name="team-a", digest="0" * 64)
    spec = objects.build_sandbox(request, caller, Settings(public_url="https://gw.test"), RID, "s")["spec"]
    env = pools.pod_environment(spec, RID, KEY)
    assert env["RUNTIME_URL"] == f"https://gw.test/{RID}"
    assert env["OH_VSCODE_BASE_PATH"] == env["OPENVSCODE_SERVER_BASE_PATH"] == f"/{RID}/vscode"
    assert env["B"] == f"1-{RID}"  # user variables may refer to earlier ones, the operator's included
    assert env["SESSION_API_KEY"] == env["OH_SESSION_API_KEYS_0"] == env["OH_SECRET_KEY"] == KEY
    assert env["RUNTIME_ID"] == RID
    assert env["VSCODE_PORT"] == env["OH_VSCODE_PORT"] == "60001"
    assert env["WORKER_1"] == "12000" and env["WORKER_2"] == "12001"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


KEYS_IN_ENV = {"OH_SESSION_API_KEYS_0": KEY, "SESSION_API_KEY": KEY, "OH_SECRET_KEY": KEY}

# (id, environment, the InitRequest fields expected besides session_api_keys/secret_key, the env expected)
INIT_CASES: list[tuple[str, dict[str, str], dict[str, Any], dict[str, str]]] = [
    ("nothing", {}, {}, {}),
    (
        "plain variables go to env",
        {"GITHUB_TOKEN": "t", "LOG_JSON": "true"},
        {},
        {"GITHUB_TOKEN": "t", "LOG_JSON": "true"},
    ),
    (
        "webhooks, every field typed as the server parses it",
        {
            "OH_WEBHOOKS_0_BASE_URL": "http://app/api/v1/webhooks",
            "OH_WEBHOOKS_0_HEADERS": '{"X-Session-API-Key": "k"}',
            "OH_WEBHOOKS_0_EVENT_BUFFER_SIZE": "10",
            "OH_WEBHOOKS_0_FLUSH_DELAY": "2.5",
            "OH_WEBHOOKS_0_NUM_RETRIES": "4",
            "OH_WEBHOOKS_0_RETRY_DELAY": "1",
            "OH_WEBHOOKS_0_MAX_QUEUE_SIZE": "50",
            "OH_WEBHOOKS_0_MAX_BATCH_BYTES": "1000",
            "OH_WEBHOOKS_0_MAX_QUEUE_BYTES": "2000",
            "OH_WEBHOOKS_1_BASE_URL": "http://second",
        },
        {
            "webhooks": [
                {
                    "base_url": "http://app/api/v1/webhooks",
                    "headers": {"X-Session-API-Key": "k"},
                    "event_buffer_size": 10,
                    "flush_delay": 2.5,
                    "num_retries": 4,
                    "retry_delay": 1,
                    "max_queue_size": 50,
                    "max_batch_bytes": 1000,
                    "max_queue_bytes": 2000,
                },
                {"base_url": "http://second"},
            ]
        },
        {},
    ),
    (
        "a value the server would refuse is passed for it to refuse",
        {"OH_WEBHOOKS_0_BASE_URL": "http://x", "OH_WEBHOOKS_0_NUM_RETRIES": "many"},
        {"webhooks": [{"base_url": "http://x", "num_retries": "many"}]},
        {},
    ),
    (
        "indexes after a gap are not read by the server: they stay plain variables",
        {"OH_WEBHOOKS_0_BASE_URL": "http://a", "OH_WEBHOOKS_2_BASE_URL": "http://c", "OH_ALLOW_CORS_ORIGINS_1": "b"},
        {"webhooks": [{"base_url": "http://a"}]},
        {"OH_WEBHOOKS_2_BASE_URL": "http://c", "OH_ALLOW_CORS_ORIGINS_1": "b"},
    ),
    (
        "CORS origins",
        {"OH_ALLOW_CORS_ORIGINS_0": "https://a", "OH_ALLOW_CORS_ORIGINS_1": "https://b"},
        {"allow_cors_origins": ["https://a", "https://b"]},
        {},
    ),
    (
        "paths",
        {"OH_CONVERSATIONS_PATH": "/workspace/conversations", "OH_BASH_EVENTS_DIR": "/workspace/bash_events"},
        {"conversations_path": "/workspace/conversations", "bash_events_dir": "/workspace/bash_events"},
        {},
    ),
    (
        "the member's throw-away key in the process environment is replaced by the session's",
        {"SESSION_API_KEY": "member-key", "OH_SECRET_KEY": "member-key", "RUNTIME_ID": RID},
        {},
        {"RUNTIME_ID": RID},
    ),
]


@pytest.mark.parametrize(("env", "fields", "rest"), [c[1:] for c in INIT_CASES], ids=[c[0] for c in INIT_CASES])
def test_init_request(env: dict[str, str], fields: dict[str, Any], rest: dict[str, str]) -> None:
    assert pools.init_request(KEY, env) == {
        "session_api_keys": [KEY],
        "secret_key": KEY,
        **fields,
        "env": {**rest, **KEYS_IN_ENV},
    }


# ---- POST /api/init failures that need no agent server (the real one: tests/node/test_agent_server_init.py) --


async def _close(gateway: Gateway) -> None:
    await gateway.http.aclose()
    await gateway.kube.close()


def _member(port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": RID},
        "spec": {"ports": [{"name": "agent", "containerPort": port}]},
        "status": {"podIP": "127.0.0.1"},
    }


async def test_a_server_that_does_not_answer_in_time_is_a_failure() -> None:
    """A pod that accepts the connection and never answers (a hung agent server)."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answered, closed at the end

    listener = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    gateway = offline_gateway(Settings(pool_init_timeout_seconds=0.2))
    try:
        body = pools.init_request(KEY, {})
        problem = await gateway.sandboxes._post_init(_member(port), "127.0.0.1", "member-key", body)
        assert problem is not None and "Timeout" in problem
        assert accepted, "the request reached the pod"
    finally:
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()
        await _close(gateway)


async def test_an_unreachable_pod_is_a_failure() -> None:
    gateway = offline_gateway(Settings())
    problem = await gateway.sandboxes._post_init(_member(9), "127.0.0.1", "k", pools.init_request(KEY, {}))
    assert problem is not None and "Connect" in problem
    await _close(gateway)
