"""`kubehands.crd.install` without a cluster: reading the YAML, the arguments, and create-or-replace
(create-or-replace and the wait for Established run against the real API server:
tests/cluster/test_crd.py)."""

from pathlib import Path

import pytest

from kubehands.crd import constants, install

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def crd(name: str) -> str:
    return f"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\n"


def test_load_crds_reads_every_document_in_order_and_skips_empty_ones(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("---\n" + crd("one.example.dev") + "---\n---\n" + crd("two.example.dev"))
    second = tmp_path / "b.yaml"
    second.write_text(crd("three.example.dev"))
    docs = install.load_crds([first, second])
    assert [d["metadata"]["name"] for d in docs] == ["one.example.dev", "two.example.dev", "three.example.dev"]


def test_load_crds_reads_the_projects_crds() -> None:
    docs = install.load_crds(sorted((ROOT / "crds").glob("*.yaml")))
    assert [d["metadata"]["name"] for d in docs] == [constants.CRD_NAME, constants.POOL_CRD_NAME]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "found 'ConfigMap'"),
        ("- a list\n", "found 'list'"),
        ("kind: CustomResourceDefinition\nmetadata: {}\n", "without metadata.name"),
        ("", "no CustomResourceDefinition"),
    ],
)
def test_load_crds_rejects_anything_but_named_crds(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        install.load_crds([path])


def test_parse_args() -> None:
    args = install.parse_args(["--kubeconfig", "/k", "--timeout", "5", "a.yaml", "b.yaml"])
    assert (args.kubeconfig, args.timeout, args.files) == ("/k", 5.0, [Path("a.yaml"), Path("b.yaml")])
    defaults = install.parse_args(["a.yaml"])
    assert (defaults.kubeconfig, defaults.timeout) == (None, install.DEFAULT_TIMEOUT)


@pytest.mark.parametrize("argv", [[], ["--timeout", "0", "a.yaml"], ["--timeout", "soon", "a.yaml"]])
def test_parse_args_rejects(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        install.parse_args(argv)
    assert exc.value.code == 2


def test_main_reports_a_bad_file_without_touching_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: ConfigMap\n")
    # a kubeconfig that does not exist: reaching the cluster step would fail differently
    assert install.main(["--kubeconfig", str(tmp_path / "none"), str(path)]) == 1
    assert "expected kind CustomResourceDefinition" in capsys.readouterr().err
    assert install.main([str(tmp_path / "missing.yaml")]) == 1
