#!/usr/bin/env python3
"""Write a docker-save image tarball from a root filesystem folder, without a registry or daemon.

Usage: mkimage.py ROOTFS NAME:TAG OUT.tar [--entrypoint JSON] [--cmd JSON] [--env K=V ...]
                  [--workdir DIR] [--user UID:GID] [--port N ...]

containerd (`ctr images import`) and `docker load` both accept the result.
"""

import argparse
import hashlib
import io
import json
import os
import tarfile
import tempfile

EXCLUDED_TOP = {"dev", "proc", "sys"}  # filled in by the runtime; keep the empty dirs only


def _layer(rootfs: str, out_path: str) -> str:
    """Write the rootfs as one uncompressed layer tar and return its sha256 (the diff id)."""
    with open(out_path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for top in sorted(os.listdir(rootfs)):
            path = os.path.join(rootfs, top)
            if top in EXCLUDED_TOP:
                tar.add(path, arcname=top, recursive=False, filter=_numeric_owner)
            else:
                tar.add(path, arcname=top, filter=_numeric_owner)
    digest = hashlib.sha256()
    with open(out_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _numeric_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rootfs")
    p.add_argument("ref")
    p.add_argument("out")
    p.add_argument("--entrypoint", type=json.loads, default=None)
    p.add_argument("--cmd", type=json.loads, default=None)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--user", default="")
    p.add_argument("--port", action="append", type=int, default=[])
    a = p.parse_args()

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.out))) as tmp:
        layer_tmp = os.path.join(tmp, "layer.tar")
        diff_id = _layer(a.rootfs, layer_tmp)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": a.env,
                "Entrypoint": a.entrypoint,
                "Cmd": a.cmd,
                "WorkingDir": a.workdir,
                "User": a.user,
                "ExposedPorts": {f"{port}/tcp": {} for port in a.port},
                "Labels": {"org.opencontainers.image.source": "kubehands"},
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": "kubehands hack/mkimage.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        name, tag = a.ref.rsplit(":", 1)
        manifest = [{"Config": config_name, "RepoTags": [a.ref], "Layers": [f"{diff_id}/layer.tar"]}]
        out_tmp = a.out + ".tmp"
        with tarfile.open(out_tmp, "w", format=tarfile.GNU_FORMAT) as out:
            def add_bytes(arcname: str, data: bytes) -> None:
                info = tarfile.TarInfo(arcname)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))

            add_bytes(config_name, config_bytes)
            add_bytes(f"{diff_id}/VERSION", b"1.0")
            out.add(layer_tmp, arcname=f"{diff_id}/layer.tar")
            add_bytes("manifest.json", json.dumps(manifest).encode())
            add_bytes("repositories", json.dumps({name: {tag: diff_id}}).encode())
        os.replace(out_tmp, a.out)


if __name__ == "__main__":
    main()
