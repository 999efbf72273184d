"""Tools and product code never import the `tests` package: tests may use them, not the other way round."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("hack", "bench", "operator", "api")
# inline Python in shell scripts: `from tests...`, `import tests...`, `-m tests....`
SHELL_IMPORT = re.compile(r"\b(from\s+tests[\s.]|import\s+tests\b|-m\s+tests\.)")


def _imports_tests(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tests" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tests":
            return True
    return False


def test_no_tool_imports_tests() -> None:
    offenders = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix == ".py" and _imports_tests(path):
                offenders.append(str(path.relative_to(ROOT)))
            elif path.suffix == ".sh" and SHELL_IMPORT.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
