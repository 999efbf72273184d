"""Every chart value is documented, and docs/configuration.md is what hack/gen-configuration-docs.py
generates from those comments (regenerate with `make docs`)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "hack" / "gen-configuration-docs.py"
VALUES = ROOT / "charts" / "kubehands" / "values.yaml"
SCHEMA = ROOT / "charts" / "kubehands" / "values.schema.json"
REFERENCE = ROOT / "docs" / "configuration.md"


def _load_generator() -> ModuleType:
    """The tool is a script (its name has dashes), so it is loaded from its path."""
    spec = importlib.util.spec_from_file_location("gen_configuration_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
parse_values = gen.parse_values
render_reference = gen.render_reference


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
        "docs/configuration.md is stale: run `make docs`"
    )
    assert gen.stale_diff(REFERENCE, VALUES) == ""


def test_generator_check_passes_on_the_committed_reference() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_generator_writes_and_check_fails_with_a_diff_when_stale(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    assert gen.main(["--output", str(out)]) == 0
    assert out.read_text() == render_reference(parse_values(VALUES.read_text()))
    assert gen.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("| Key | Default | Description |", "| Key | Description |"))
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "+| Key | Default | Description |" in done.stdout
    assert "make docs" in done.stderr
