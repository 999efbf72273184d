"""The `kubehands` command.

Each component registers its own subcommands in a `cli` module of its package; they are
imported lazily, so `kubehands keys` never loads kopf and `kubehands operator` never loads FastAPI.
"""

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from importlib.metadata import version

        print(version("kubehands"))
        return 0
    if args.command is None:
        return 2
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args))


if __name__ == "__main__":
    sys.exit(main())
