"""hack/mkimage.py writes a docker-save tarball that containerd and docker accept."""

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
MKIMAGE = Path(__file__).resolve().parents[2] / "hack" / "mkimage.py"


def test_image_tarball_layout(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "proc").mkdir()
    (rootfs / "proc" / "junk").write_text("never packaged")
    (rootfs / "bin" / "hello").write_text("#!/bin/sh\necho hi\n")
    out = tmp_path / "img.tar"
    subprocess.run(
        [sys.executable, str(MKIMAGE), str(rootfs), "example/hello:1.0", str(out),
         "--entrypoint", '["/bin/hello"]', "--env", "A=1", "--user", "10001:10001", "--port", "60000"],
        check=True,
    )
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["example/hello:1.0"]
        config_bytes = tar.extractfile(manifest[0]["Config"]).read()
        assert manifest[0]["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
        config = json.loads(config_bytes)
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["ExposedPorts"] == {"60000/tcp": {}}
    with tarfile.open(fileobj=__import__("io").BytesIO(layer)) as layer_tar:
        names = layer_tar.getnames()
        assert "bin/hello" in names and "proc" in names and "proc/junk" not in names
        assert all(m.uname == "" for m in layer_tar.getmembers())
