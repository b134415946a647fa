"""Which image references swarmctl looks up in a registry, and how it splits them
(swarmctl/registry.py; the look-ups against a real registry are in
tests/integration/test_image_platforms.py)."""

from __future__ import annotations

import pytest

from swarmctl.registry import ImageRef, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("10.1.2.3:5000/swarmlet/demo:1", ImageRef("10.1.2.3:5000", "swarmlet/demo", "1")),
        ("127.0.0.1:5000/app", ImageRef("127.0.0.1:5000", "app", "latest")),
        ("localhost/app:v1", ImageRef("localhost", "app", "v1")),
        ("localhost:5000/a/b/c:tag_1", ImageRef("localhost:5000", "a/b/c", "tag_1")),
        ("registry.example.com/team/app", ImageRef("registry.example.com", "team/app", "latest")),
        (f"ghcr.io/org/app:1@{DIGEST}", ImageRef("ghcr.io", "org/app", DIGEST)),
        (f"ghcr.io/org/app@{DIGEST}", ImageRef("ghcr.io", "org/app", DIGEST)),
        ("docker.io/busybox:1.36", ImageRef("registry-1.docker.io", "library/busybox", "1.36")),
        ("docker.io/user/app", ImageRef("registry-1.docker.io", "user/app", "latest")),
        ("[::1]:5000/app:2", ImageRef("[::1]:5000", "app", "2")),
    ],
)  # fmt: skip
def test_references_with_a_registry_host(image: str, expected: ImageRef) -> None:
    assert parse_reference(image) == expected


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "swarmlet/demo:latest",  # a Docker Hub user, not a host
        f"alpine@{DIGEST}",
        "registry.local:5000/",  # no repository
        "registry.local:5000//app",
        "registry.local:5000/app@notadigest",
        "",
    ],
)
def test_references_not_looked_up(image: str) -> None:
    assert parse_reference(image) is None
