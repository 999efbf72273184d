"""The install instructions name only what this project ships: the `kubehands` CLI of a checkout (`make venv`,
`.venv/bin/kubehands`) or the one in the gateway image (`kubectl exec`). No package named `kubehands` on PyPI is
ours, so an instruction to install one by name (pip, pipx, uv, poetry) would run whatever a stranger publishes
under that name on every administrator's machine that follows it."""

import re
from pathlib import Path

import pytest

from tests.unit.test_chart import ROOT

pytestmark = pytest.mark.unit

# An installer given `kubehands` (optionally with extras or a version) as a package name; paths (`.`, `-e .`,
# `./dist/kubehands-0.1.0.whl`) are what a checkout installs, and are fine.
BY_NAME = re.compile(
    r"\b(?:pip3?|pipx|uv\s+(?:pip|tool)|poetry|pdm|rye)\s+(?:install|add)\b[^\n`]*?(?<![\w./-])kubehands(?:\[[^\]]*\])?"
    r"(?:[=<>~!]=?[\w.*]+)?(?![\w./-])",
    re.I,
)
WHERE = ("README.md", "docs/**/*.md", "charts/**/*.md", "charts/**/*.txt", "charts/**/*.yaml", "charts/**/*.tpl")


def instruction_files() -> list[Path]:
    return sorted({path for pattern in WHERE for path in ROOT.glob(pattern)})


@pytest.mark.parametrize(
    "text",
    ["pip install kubehands", "pipx install kubehands", "uv tool install kubehands==0.1", "pip install 'kubehands[x]'",
     "python -m pip install --user kubehands"],
)  # fmt: skip
def test_the_check_finds_an_install_by_name(text: str) -> None:
    assert BY_NAME.search(text)


@pytest.mark.parametrize(
    "text",
    ["pip install -e '.[test]'", "pip install ./dist/kubehands-0.1.0.whl", "`pip install` and `git clone` work",
     "make venv; .venv/bin/kubehands keys"],
)  # fmt: skip
def test_the_check_leaves_a_checkout_alone(text: str) -> None:
    assert not BY_NAME.search(text)


def test_no_instruction_installs_kubehands_by_name() -> None:
    files = instruction_files()
    assert ROOT / "docs" / "install.md" in files and ROOT / "charts" / "kubehands" / "templates" / "NOTES.txt" in files
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for path in files
        for text in [path.read_text()]
        for m in BY_NAME.finditer(text)
    ]
    assert found == []


def test_the_docs_say_where_the_cli_comes_from() -> None:
    install = (ROOT / "docs" / "install.md").read_text()
    assert "make venv" in install and ".venv/bin/kubehands" in install
    assert "exec deploy/kubehands-gateway -- kubehands" in install
    notes = (ROOT / "charts" / "kubehands" / "templates" / "NOTES.txt").read_text()
    assert "from a kubehands checkout" in notes
