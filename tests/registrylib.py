"""A real image registry for tests: Debian's docker-registry (the CNCF distribution
registry) on a free loopback port, plain HTTP, storage in a temporary directory.

Images are pushed through the registry's own API, made by hand: a `FROM scratch` image
of one layer holding one file, whose config names the os and architecture asked for,
and manifest lists (or OCI indexes) over such images. No Docker engine is needed, and
the architecture can be one this machine cannot run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import urllib.request
from typing import Any

from tests.harness import Process, free_port, short_tmpdir, wait_until

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(content: bytes) -> tuple[bytes, str]:
    """A gzipped tar of one file, and the digest of the uncompressed tar (its diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), _digest(tar_bytes)


class LocalRegistry:
    """A docker-registry process; `cleanup` stops it and removes its storage."""

    def __init__(self) -> None:
        if shutil.which("docker-registry") is None:
            raise RuntimeError(
                "no docker-registry on PATH: run scripts/install-deps.sh (Debian's docker-registry)"
            )
        self.dir = short_tmpdir("swl-reg-")
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            f"http:\n  addr: {self.addr}\n"
        )
        self.process = Process(
            "registry", ["docker-registry", "serve", str(config)], self.dir / "registry.log"
        )

    def start(self) -> LocalRegistry:
        self.process.start()
        try:
            wait_until(self._answers, 30, what=f"the registry on {self.addr}")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _answers(self) -> bool:
        if not self.process.running:
            raise AssertionError(f"docker-registry exited:\n{self.process.log()[-2000:]}")
        with urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2) as reply:
            return bool(reply.status == 200)

    def cleanup(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- pushing through the distribution API --

    def _request(
        self, method: str, path_or_url: str, body: bytes = b"", content_type: str = ""
    ) -> Any:
        url = path_or_url if "://" in path_or_url else f"http://{self.addr}{path_or_url}"
        request = urllib.request.Request(url, data=body or None, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        return urllib.request.urlopen(request, timeout=10)

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = _digest(data)
        with self._request("POST", f"/v2/{repository}/blobs/uploads/") as reply:
            location = reply.headers["Location"]
        if not location.startswith("http"):
            location = f"http://{self.addr}{location}"
        sep = "&" if "?" in location else "?"
        with self._request(
            "PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream"
        ):
            pass
        return digest

    def push_manifest(self, repository: str, reference: str, manifest: dict[str, Any]) -> str:
        """Push a manifest (its mediaType field says which kind); returns its digest."""
        body = json.dumps(manifest).encode()
        with self._request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body, manifest["mediaType"]
        ):
            pass
        return _digest(body)

    def push_image(
        self, repository: str, tag: str, *, os: str = "linux", architecture: str
    ) -> dict[str, Any]:
        """A one-file `FROM scratch` image for os/architecture, tagged `tag`; returns the
        descriptor of its manifest (for a manifest list)."""
        layer, diff_id = _layer(f"built for {os}/{architecture}\n".encode())
        config = json.dumps(
            {
                "architecture": architecture,
                "os": os,
                "config": {"Cmd": ["/hello.txt"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created_by": "COPY hello.txt / # made by tests/registrylib.py"}],
            }
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "size": len(config),
                "digest": self.push_blob(repository, config),
            },
            "layers": [
                {
                    "mediaType": DOCKER_LAYER,
                    "size": len(layer),
                    "digest": self.push_blob(repository, layer),
                }
            ],
        }
        body = json.dumps(manifest).encode()
        digest = self.push_manifest(repository, tag, manifest)
        return {
            "mediaType": DOCKER_MANIFEST,
            "size": len(body),
            "digest": digest,
            "platform": {"os": os, "architecture": architecture},
        }

    def push_list(
        self,
        repository: str,
        tag: str,
        platforms: list[tuple[str, str]],
        *,
        media_type: str = DOCKER_LIST,
        extra: list[dict[str, Any]] | None = None,
    ) -> None:
        """A manifest list (or OCI index) over one image per (os, architecture), plus
        `extra` descriptors as given."""
        entries = [
            self.push_image(repository, f"{tag}-{os}-{arch}", os=os, architecture=arch)
            for os, arch in platforms
        ]
        entries += extra or []
        self.push_manifest(
            repository,
            tag,
            {"schemaVersion": 2, "mediaType": media_type, "manifests": entries},
        )
