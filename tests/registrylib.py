"""A real image registry for tests: Debian's docker-registry (the CNCF distribution
registry) on a free loopback port, plain HTTP, storage in a temporary directory.

Images are pushed through the registry's own API, made by hand: a `FROM scratch` image
of one layer holding one file, whose config names the os and architecture asked for,
and manifest lists (or OCI indexes) over such images. No Docker engine is needed, and
the architecture can be one this machine cannot run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A registry token service (the Docker token authentication spec): anyone gets a
    token for what they ask, signed with a key whose self-signed certificate the
    registry trusts. It records the scopes asked for."""

    SERVICE = "swarmlet-test-registry"
    ISSUER = "swarmlet-test-tokens"

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.ISSUER)])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / "token-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.scopes: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scope = query.get("scope", [""])[0]
                service.scopes.append(scope)
                body = json.dumps({"token": service.token(scope)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, scope: str) -> str:
        access = []
        if scope.count(":") >= 2:
            kind, rest = scope.split(":", 1)
            name, actions = rest.rsplit(":", 1)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.ISSUER,
            "sub": "anonymous",
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class LocalRegistry:
    """A docker-registry process; `cleanup` stops it and removes its storage.

    With `tokens`, it wants a bearer token from that service for every request; with
    `storage`, it serves the storage of another registry (push there, read here).
    """

    def __init__(self, tokens: TokenService | None = None, storage: Path | None = None) -> None:
        if shutil.which("docker-registry") is None:
            raise RuntimeError(
                "no docker-registry on PATH: run scripts/install-deps.sh (Debian's docker-registry)"
            )
        self.dir = short_tmpdir("swl-reg-")
        self.storage = storage or self.dir / "data"
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.tokens = tokens
        auth = ""
        if tokens is not None:
            auth = (
                "auth:\n  token:\n"
                f"    realm: {tokens.realm}\n"
                f"    service: {tokens.SERVICE}\n"
                f"    issuer: {tokens.ISSUER}\n"
                f"    rootcertbundle: {tokens.cert_path}\n"
            )
        config = self.dir / "config.yml"
        # No blob descriptor cache: two registries may share the storage.
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            f"http:\n  addr: {self.addr}\n"
            f"{auth}"
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
        try:
            with urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2) as reply:
                return bool(reply.status == 200)
        except urllib.error.HTTPError as exc:
            return self.tokens is not None and exc.code == 401

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
