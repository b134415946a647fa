"""The platforms an image is built for, looked up in its registry (Docker distribution
API v2), so that `service create/update` can constrain the tasks to nodes that can run
it, as Docker's CLI does.

An image reference names its registry when its first path component looks like a host
(`10.123.45.1:5000/swarmlet/demo:latest`, `registry.example.com/app`, `localhost/app`).
Its manifest is fetched with the Accept headers of every kind a registry may serve: a
manifest list or OCI index gives every platform it lists; a single image manifest
gives the os/architecture of its config blob; a schema 1 manifest names its
architecture. HTTPS is tried first; a registry that answers in plain HTTP (a local one)
is then asked over HTTP, as Docker does for insecure registries. Anonymous bearer
tokens are fetched when the registry asks for one.

Nothing here ever fails a command: an image without a registry host (found only on the
engines, or on Docker Hub, which this machine's nodes may not reach), a registry that
does not answer within a few seconds, or anything unexpected in its answers gives no
platforms, and the service is created without a platform constraint.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from common.api import types_pb2
from common.log import get_logger

# The whole look-up (every request) gives up after this many seconds.
LOOKUP_TIMEOUT = 5.0
# One request gives up after this many seconds.
REQUEST_TIMEOUT = 2.0
# Manifests and configs are small; anything larger is not what we asked for.
MAX_BODY = 4 * 1024 * 1024

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES, *SCHEMA1_TYPES))

_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_BEARER_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """The look-up could not give the image's platforms; the message says why."""


@dataclass(frozen=True)
class ImageRef:
    """An image reference split as the distribution API needs it."""

    registry: str  # host[:port] to connect to
    repository: str  # the path in the registry, e.g. swarmlet/demo
    reference: str  # a tag or a digest


def parse_reference(image: str) -> ImageRef | None:
    """The registry, repository and tag/digest of `image`; None when it names no
    registry host (a bare `name[:tag]` or `user/name[:tag]`)."""
    name, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        return None
    host, sep, path = name.partition("/")
    if not sep or not path:
        return None
    if not ("." in host or ":" in host or host == "localhost"):
        return None  # a Docker Hub user, not a host
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
    if not path or any(not part for part in path.split("/")):
        return None
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
        if "/" not in path:
            path = f"library/{path}"
    return ImageRef(host, path, digest or tag or "latest")


def image_platforms(image: str, *, debug: bool = False) -> list[types_pb2.Platform]:
    """The platforms of `image` as its registry describes it; [] when there is no
    registry to ask or the look-up fails (said at debug level with `debug`)."""
    log = get_logger("registry", image=image) if debug else None
    ref = parse_reference(image)
    if ref is None:
        if log is not None:
            log.debug("image names no registry host: no platform constraint from the image")
        return []
    try:
        found = lookup_platforms(ref)
    except RegistryError as exc:
        if log is not None:
            log.debug("image platforms not resolved: no platform constraint", reason=str(exc))
        return []
    if log is not None:
        log.debug("image platforms resolved", platforms=[f"{o}/{a}" for o, a in found])
    return [types_pb2.Platform(os=os_, architecture=arch) for os_, arch in found]


def lookup_platforms(ref: ImageRef, timeout: float = LOOKUP_TIMEOUT) -> list[tuple[str, str]]:
    """(os, architecture) of every platform `ref` is built for, in the registry's order."""
    session = _Session(ref, time.monotonic() + timeout)
    body, media_type = session.get(f"manifests/{ref.reference}", ACCEPT)
    manifest = _json(body, "manifest")
    media_type = media_type or str(manifest.get("mediaType", ""))
    if media_type in INDEX_TYPES or (not media_type and "manifests" in manifest):
        return _index_platforms(manifest)
    if media_type in SCHEMA1_TYPES or manifest.get("schemaVersion") == 1:
        arch = manifest.get("architecture")
        if not isinstance(arch, str) or not arch:
            raise RegistryError("schema 1 manifest names no architecture")
        return [("linux", arch)]
    config = manifest.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        raise RegistryError(f"manifest of media type {media_type or '?'} has no config")
    blob, _ = session.get(f"blobs/{config['digest']}", "*/*")
    image_config = _json(blob, "image config")
    os_, arch = image_config.get("os"), image_config.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
        raise RegistryError("image config names no os and architecture")
    return [(os_, arch)]


def _index_platforms(index: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise RegistryError("manifest list has no manifests")
    for entry in manifests:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(platform, dict):
            continue
        os_, arch = platform.get("os"), platform.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            continue
        if os_ == "unknown" or arch == "unknown":
            continue  # attestations and other non-images (buildx puts them in indexes)
        if (os_, arch) not in out:
            out.append((os_, arch))
    if not out:
        raise RegistryError("manifest list names no platform")
    return out


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by _Session (which drops credentials across hosts)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class _Session:
    """GETs against one registry within one deadline: the scheme that works (HTTPS,
    else plain HTTP for a registry that does not speak TLS), and a bearer token once
    the registry asked for one."""

    def __init__(self, ref: ImageRef, deadline: float) -> None:
        self.ref = ref
        self.deadline = deadline
        self.scheme: str | None = None
        self.token = ""

    def get(self, path: str, accept: str) -> tuple[bytes, str]:
        """The body and media type of /v2/<repository>/<path>."""
        url_path = f"/v2/{self.ref.repository}/{path}"
        if self.scheme is None:
            try:
                result = self._get(f"https://{self.ref.registry}{url_path}", accept)
                self.scheme = "https"
                return result
            except _PlainHTTPError:
                self.scheme = "http"
        return self._get(f"{self.scheme}://{self.ref.registry}{url_path}", accept)

    def _get(self, url: str, accept: str) -> tuple[bytes, str]:
        authorised_host = urllib.parse.urlsplit(url).netloc
        for _ in range(6):
            headers = {"Accept": accept, "User-Agent": "swarmctl"}
            if self.token and urllib.parse.urlsplit(url).netloc == authorised_host:
                headers["Authorization"] = f"Bearer {self.token}"
            status, reply_headers, body = self._request(url, headers)
            if status in (301, 302, 303, 307, 308):
                location = reply_headers.get("Location")
                if not location:
                    raise RegistryError(f"redirect without a location from {url}")
                url = urllib.parse.urljoin(url, location)
                continue
            if status == 401 and not self.token:
                self.token = self._token(reply_headers.get("WWW-Authenticate", ""))
                continue
            if status != 200:
                raise RegistryError(f"{url} answered HTTP {status}")
            media_type = reply_headers.get("Content-Type", "").split(";")[0].strip()
            return body, media_type
        raise RegistryError(f"too many redirects or authentication rounds for {url}")

    def _token(self, challenge: str) -> str:
        """An anonymous pull token from the realm a `Bearer` challenge names."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise RegistryError(f"registry wants {scheme or 'unknown'} authentication")
        values = dict(_BEARER_PARAM.findall(params))
        realm = values.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryError("bearer challenge without a usable realm")
        values.setdefault("scope", f"repository:{self.ref.repository}:pull")
        url = f"{realm}?{urllib.parse.urlencode(values)}"
        status, _, body = self._request(url, {"User-Agent": "swarmctl"})
        if status != 200:
            raise RegistryError(f"token service {realm} answered HTTP {status}")
        answer = _json(body, "token answer")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError("token service gave no token")
        return token

    def _request(self, url: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RegistryError("registry look-up timed out")
        request = urllib.request.Request(url, headers=headers)
        try:
            with _OPENER.open(request, timeout=min(REQUEST_TIMEOUT, left)) as reply:
                return reply.status, reply.headers, reply.read(MAX_BODY)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, b""
        except urllib.error.URLError as exc:
            reason = exc.reason
            if (
                url.startswith("https://")
                and isinstance(reason, ssl.SSLError)
                and not isinstance(reason, ssl.SSLCertVerificationError)
            ):
                raise _PlainHTTPError from None
            if url.startswith("https://") and isinstance(reason, ConnectionRefusedError):
                raise _PlainHTTPError from None
            raise RegistryError(f"cannot reach {url}: {reason}") from None
        except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
            raise RegistryError(f"cannot reach {url}: {exc}") from None


class _PlainHTTPError(Exception):
    """The HTTPS attempt met a server that speaks plain HTTP (or nothing on the port)."""
