#!/usr/bin/env python3
"""Generate docs/configuration.md, the chart's value reference, from the comments in values.yaml.

Usage: .venv/bin/python hack/gen-configuration-docs.py            (re)write docs/configuration.md (`make docs`)
       .venv/bin/python hack/gen-configuration-docs.py --check    exit 1 with a diff when it is stale

Each value's comment block starts with "<key> -- <description>"; the reference lists every key
with its default and that description. tests/unit/test_chart_docs.py runs the check.
"""

import argparse
import difflib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "charts" / "kubehands" / "values.yaml"
REFERENCE = ROOT / "docs" / "configuration.md"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):(?P<rest>.*)$")


@dataclass
class Value:
    path: str  # dotted, e.g. api.adminKey.name
    comment: list[str]  # the comment lines right above the key, without "# "
    default: object


def parse_values(text: str) -> list[Value]:
    """Walk values.yaml line by line: each key, its dotted path and the comment block above it."""
    defaults = yaml.safe_load(text)
    found: list[Value] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            comment = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        path = ".".join(k for _, k in stack)
        node: object = defaults
        for part in path.split("."):
            node = node[part]  # type: ignore[index]
        found.append(Value(path, comment, node))
        comment = []
    return found


def render_reference(values: list[Value]) -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from charts/kubehands/values.yaml by `make docs`",
        "     (hack/gen-configuration-docs.py); do not edit by hand",
        "     (tests/unit/test_chart_docs.py fails when this file is stale). -->",
        "",
        "Every value of the `kubehands` Helm chart, its default and what it does. Set values",
        "with `helm install ... -f my-values.yaml` or `--set key=value`; `values.schema.json`",
        "rejects unknown keys and wrong types. [install.md](install.md) shows typical combinations.",
        "",
        "| Key | Default | Description |",
        "| --- | --- | --- |",
    ]
    for value in values:
        text = " ".join(value.comment)
        description = text.split(" -- ", 1)[1] if " -- " in text else text
        default = value.default
        shown = "" if isinstance(default, dict) and default else f"`{json.dumps(default)}`"
        description = description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{value.path}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"


def expected(values_file: Path = VALUES) -> str:
    return render_reference(parse_values(values_file.read_text()))


def stale_diff(output: Path = REFERENCE, values_file: Path = VALUES) -> str:
    """A unified diff from `output` to what it should be; empty when it is up to date."""
    want = expected(values_file)
    have = output.read_text() if output.is_file() else ""
    if have == want:
        return ""
    lines = difflib.unified_diff(
        have.splitlines(keepends=True), want.splitlines(keepends=True), str(output), "generated"
    )
    return "".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff when the file is stale")
    parser.add_argument("--output", type=Path, default=REFERENCE, help="the reference file (default: %(default)s)")
    parser.add_argument("--values", type=Path, default=VALUES, help="the chart's values.yaml (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        diff = stale_diff(args.output, args.values)
        if diff:
            sys.stdout.write(diff)
            print(f"{args.output} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(expected(args.values))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
