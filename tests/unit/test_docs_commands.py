"""Every `kubehands` command line the documentation tells a user to type parses.

Command lines are taken from the fenced code blocks of README.md and docs/*.md, the chart's README and the
NOTES.txt that `helm install` prints: a line whose command is `kubehands`, `.venv/bin/kubehands` or
`kubectl ... exec ... -- kubehands`. Usage synopses (`[--key NAME]`, `...`) describe, they are not typed: skipped.
"""

import re
import shlex
from pathlib import Path

import pytest

from kubehands.cli import parse_args

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "charts" / "kubehands" / "README.md"]
NOTES = ROOT / "charts" / "kubehands" / "templates" / "NOTES.txt"
COMMAND = re.compile(r"(?:^|\s--\s|^\S*/)kubehands\s+(?:operator|gateway|keys|sandboxes)\b.*")


def code_lines(path: Path) -> list[str]:
    """The lines of a file's fenced code blocks (all of NOTES.txt, which is printed as is)."""
    text = path.read_text()
    if path == NOTES:
        text = re.sub(r"\{\{-?\s*\$ns\s*-?\}\}", "kubehands", text)
        return [line for line in text.splitlines() if "{{" not in line]
    return [line for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M) for line in block.splitlines()]


def documented_commands() -> list[tuple[str, str]]:
    """(where, argv string) of every documented kubehands command line."""
    found = []
    for path in [*SOURCES, NOTES]:
        for line in code_lines(path):
            match = COMMAND.search(line.strip())
            if match is None:
                continue
            command = match.group(0).split(" #")[0].strip()
            if "[" in command or "..." in command:
                continue
            argv = shlex.split(command)
            found.append((path.relative_to(ROOT).as_posix(), " ".join(argv[argv.index(next(
                a for a in argv if a.endswith("kubehands"))) + 1:])))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_kubehands_commands() -> None:
    where = {w for w, _ in COMMANDS}
    assert {"docs/install.md", "docs/operations.md", "charts/kubehands/templates/NOTES.txt"} <= where, where
    # The key CLI is shown with its options after the subcommand, as a user types it.
    assert ("docs/install.md", "keys create admin -n kubehands") in COMMANDS


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[f"{w}: {a}" for w, a in COMMANDS])
def test_documented_command_parses(where: str, argv: str) -> None:
    try:
        args = parse_args(shlex.split(argv))
    except SystemExit as exit_:
        pytest.fail(f"{where}: `kubehands {argv}` does not parse (exit {exit_.code})")
    assert args.command in ("operator", "gateway", "keys", "sandboxes")


@pytest.mark.parametrize("component", ["keys", "sandboxes"])
def test_connection_options_go_before_or_after_the_subcommand(component: str) -> None:
    """-n and --kubeconfig are taken on either side of the subcommand; the one after it wins."""
    command = ["create", "team-a"] if component == "keys" else ["get", "kh-1"]
    before = parse_args([component, "-n", "ns-a", "--kubeconfig", "kc-a", *command])
    after = parse_args([component, *command, "-n", "ns-a", "--kubeconfig", "kc-a"])
    both = parse_args([component, "-n", "ns-a", *command, "--namespace", "ns-b"])
    assert (before.namespace, before.kubeconfig) == (after.namespace, after.kubeconfig) == ("ns-a", "kc-a")
    assert both.namespace == "ns-b"
