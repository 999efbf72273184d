"""Every chart value is documented, and docs/configuration.md is generated from those comments.

Regenerate the reference with:  .venv/bin/python -m tests.unit.test_chart_docs
"""

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "charts" / "kubehands" / "values.yaml"
SCHEMA = ROOT / "charts" / "kubehands" / "values.schema.json"
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
        "<!-- Generated from charts/kubehands/values.yaml by",
        "     `.venv/bin/python -m tests.unit.test_chart_docs`; do not edit by hand",
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


def test_every_value_has_a_comment_starting_with_its_key() -> None:
    values = parse_values(VALUES.read_text())
    assert len(values) > 50
    undocumented = [v.path for v in values if not v.comment]
    assert undocumented == []
    misnamed = [
        (v.path, v.comment[0])
        for v in values
        if not (
            v.comment[0].startswith(f"{v.path} -- ")
            or v.comment[0].startswith(f"{v.path.split('.')[-1]} -- ")
        )
    ]
    assert misnamed == []


def test_every_value_is_in_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    missing = []
    for value in parse_values(VALUES.read_text()):
        node = schema
        for part in value.path.split("."):
            props = node.get("properties")
            if (
                props is None
            ):  # free-form object (e.g. securityContext, resources): deeper keys are not listed
                break
            if part not in props:
                missing.append(value.path)
                break
            node = props[part]
    assert missing == []


def test_configuration_reference_is_up_to_date() -> None:
    expected = render_reference(parse_values(VALUES.read_text()))
    assert REFERENCE.is_file() and REFERENCE.read_text() == expected, (
        "docs/configuration.md is stale: run .venv/bin/python -m tests.unit.test_chart_docs"
    )


if __name__ == "__main__":
    REFERENCE.write_text(render_reference(parse_values(VALUES.read_text())))
    print(f"wrote {REFERENCE.relative_to(ROOT)}", file=sys.stderr)
