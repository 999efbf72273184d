"""The `kubehands` command.

Each component registers its own subcommands in a `cli` module of its package; they are
imported lazily, so `kubehands keys` never loads kopf and `kubehands operator` never loads FastAPI.
A mistake of the user's (a bad `KUBEHANDS_*` setting, a missing or broken kubeconfig) that reaches this level
is told in one line, with exit status 2, never as a traceback (`user_error`).
"""

import argparse
import asyncio
import importlib
import sys

from pydantic import ValidationError

# subcommand -> module with `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("kubehands.operator.cli", "run the Sandbox operator (kopf)"),
    "gateway": ("kubehands.api.cli.gateway", "run the OpenHands runtime API gateway (uvicorn)"),
    "keys": ("kubehands.api.cli.keys", "create, list and revoke API keys"),
    "sandboxes": ("kubehands.api.cli.sandboxes", "list, inspect, pause, resume and stop sandboxes; print their logs"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; exits with a usage message (status 2) when it does not parse."""
    parser = argparse.ArgumentParser(prog="kubehands", description="kubehands: OpenHands sandboxes on Kubernetes")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    name = next((a for a in argv if not a.startswith("-")), None)
    for command, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(command, help=help_text)
        if command == name:  # only the chosen component is imported
            importlib.import_module(module_name).add_arguments(command_parser)
    args = parser.parse_args(argv)
    if args.command is None and not args.version:
        parser.print_help()
    return args


# The settings classes, whose fields are read from KUBEHANDS_<FIELD> (pydantic-settings, env_prefix).
SETTINGS_MODELS = frozenset({"Settings", "SpecSettings", "OperatorConfig"})


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


# Where each command takes its kubeconfig from, for the error that names none that works.
KUBECONFIG_OPTION = {"gateway": "KUBEHANDS_KUBECONFIG", "operator": "KUBEHANDS_KUBECONFIG"}


def user_error(exc: BaseException, command: str = "") -> str | None:
    """The one line that tells a user's mistake, or None for anything else (a bug: its traceback stays)."""
    if isinstance(exc, ValidationError):
        fields = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            if exc.title in SETTINGS_MODELS and error["loc"]:
                where = f"KUBEHANDS_{str(error['loc'][0]).upper()}"
            fields.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
        return "invalid settings: " + "; ".join(fields)
    # Loaded only if the command already did: `kubehands keys` and `kubehands sandboxes` load them, kopf too.
    config_errors = sys.modules.get("kubernetes_asyncio.config.config_exception")
    if config_errors is not None and isinstance(exc, config_errors.ConfigException):
        option = KUBECONFIG_OPTION.get(command, "--kubeconfig")
        return f"kubeconfig: {_first_line(str(exc))}; set {option} or KUBECONFIG"
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        return f"not YAML: {_first_line(str(exc))}"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return str(exc)
    return None


def preflight(command: str) -> None:
    """The servers read their settings and log in inside uvicorn's and kopf's loops, which print a traceback (and
    kopf then retries for ever): both are done once here first, so a mistake fails at once (`user_error`)."""
    if command == "gateway":
        from kubehands.api.settings import Settings

        kubeconfig = Settings().kubeconfig
    elif command == "operator":
        from kubehands.operator.config import OperatorConfig

        kubeconfig = OperatorConfig().kubeconfig
    else:
        return
    from kubehands.kube import load_configuration

    asyncio.run(load_configuration(kubeconfig))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from importlib.metadata import version

        print(version("kubehands"))
        return 0
    if args.command is None:
        return 2
    try:
        preflight(args.command)
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args))
    except Exception as exc:
        problem = user_error(exc, args.command)
        if problem is None:
            raise
        print(f"kubehands {args.command}: error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
