"""A slow or unreachable API server costs one log line per failed check, never a traceback per Sandbox,
and never stops the culling loop or kopf's retries."""

import logging

import aiohttp
import kopf
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.operator import handlers
from kubehands.operator.plan import Step
from kubehands.operator.reconcile import StepFailed

pytestmark = pytest.mark.unit


def quota_refusal() -> ApiException:
    error = ApiException(status=403, reason="Forbidden")
    error.body = '{"kind": "Status", "message": "pods \\"kh-a\\" is forbidden: exceeded quota: q"}'
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError(), "culling ns/kh-a: a Kubernetes API call timed out; retrying later"),
        (
            quota_refusal(),
            'culling ns/kh-a: the API server answered 403 pods "kh-a" is forbidden: exceeded quota: q; retrying later',
        ),
        (aiohttp.ClientConnectionError("connection reset"), "culling ns/kh-a: ClientConnectionError"),
    ],
)
def test_api_trouble_is_one_warning_line(
    error: BaseException, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=handlers.log.name):
        handlers.log_failure("culling", "ns", "kh-a", error)
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage().startswith(expected)


def test_a_bug_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("status")
    except KeyError as e:
        with caplog.at_level(logging.DEBUG, logger=handlers.log.name):
            handlers.log_failure("culling", "ns", "kh-a", e)
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_handler_timeout_is_a_quiet_retry() -> None:
    """kopf logs a TemporaryError as one line (no traceback) and retries it after its delay."""
    retried = handlers.retry_timeouts(TimeoutError())
    assert isinstance(retried, kopf.TemporaryError) and retried.delay == handlers.TIMEOUT_RETRY_SECONDS
    other = ValueError("x")
    assert handlers.retry_timeouts(other) is other


def test_a_failed_step_names_the_step_and_the_api_server_answer() -> None:
    assert str(StepFailed(Step.CREATE_POD, quota_refusal())) == (
        'create pod failed: 403 pods "kh-a" is forbidden: exceeded quota: q'
    )
    timeout = TimeoutError()
    failed = StepFailed(Step.CREATE_CLAIM, timeout)
    assert str(failed) == "create claim failed: TimeoutError" and failed.cause is timeout
