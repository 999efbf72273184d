"""The gateway settings `make run` uses (hack/run.env), for tests that must run the clients against them."""

from pathlib import Path

RUN_ENV = Path(__file__).resolve().parents[2] / "hack" / "run.env"


def make_run_gateway_env() -> dict[str, str]:
    """hack/run.env's `KUBEHANDS_*=value` lines."""
    pairs = (line.split("=", 1) for line in RUN_ENV.read_text().splitlines() if line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def make_run_settings() -> dict[str, str]:
    """The same, as `Settings(**...)` keyword arguments (`KUBEHANDS_ROUTING_MODE` -> `routing_mode`)."""
    return {name.removeprefix("KUBEHANDS_").lower(): value for name, value in make_run_gateway_env().items()}
