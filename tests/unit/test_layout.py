"""Guard the package layout: the folder `operator/` must never shadow the stdlib `operator`."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["operator", "api", "operator/kubehands", "api/kubehands"])
def test_containers_are_not_packages(folder: str) -> None:
    assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/__init__.py would shadow or split a package"


def test_nothing_importable_directly_under_the_containers() -> None:
    stray = [p.name for d in ("operator", "api") for p in (ROOT / d).iterdir() if p.suffix == ".py"]
    assert stray == []


def test_stdlib_operator_wins_from_the_repository_root() -> None:
    code = "import operator, collections; print(operator.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "site-packages" not in out.stdout and str(ROOT / "operator") not in out.stdout
    assert out.stdout.strip().endswith("operator.py")


@pytest.mark.parametrize("module", ["kubehands.crd", "kubehands.kube", "kubehands.api", "kubehands.cli"])
def test_shared_and_gateway_modules_do_not_load_kopf(module: str) -> None:
    code = f"import sys, {module}; print('kopf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_script_reports_the_version() -> None:
    exe = Path(sys.executable).parent / "kubehands"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1.0"
