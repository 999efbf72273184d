"""Fixtures the node tier's OpenHands-app modules share (tests/helpers/live_app.py): one gateway and one app server
per module."""

from collections.abc import Iterator

import pytest

from tests.helpers import live_app
from tests.helpers.live_app import AppServer, LiveGateway


@pytest.fixture(scope="module")
def live_gateway(
    kubeconfig: str, app_agent_server_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    with live_app.live_gateway(kubeconfig, app_agent_server_image, tmp_path_factory.mktemp("e2e-logs")) as live:
        yield live


@pytest.fixture(scope="module")
def app_server(
    live_gateway: LiveGateway, app_agent_server_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    with live_app.app_server(live_gateway, app_agent_server_image, tmp_path_factory.mktemp("app")) as app:
        yield app
