"""The platform filter against the image's own platforms: `swarmctl service create/update`
looks the image up in its registry (a real docker-registry on loopback, holding images
made by hand for architectures this machine cannot run) and constrains the tasks to
nodes of those platforms; hollow nodes report linux/x86_64."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from common.api import types_pb2
from swarmctl.registry import (
    ImageRef,
    RegistryError,
    image_platforms,
    lookup_platforms,
    parse_reference,
)
from tests.harness import free_port
from tests.integration.test_scheduling import Farm, start_farm
from tests.registrylib import OCI_INDEX, LocalRegistry, TokenService

ARM_ONLY = "no suitable node (unsupported platform on 2 nodes)"


def registry_ref(image: str) -> ImageRef:
    """`image`, which names a registry host, parsed."""
    ref = parse_reference(image)
    assert ref is not None, f"{image} names no registry"
    return ref


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    """A registry holding:
    - arm/app:1       one image, config linux/arm64
    - amd/app:1       one image, config linux/amd64
    - multi/app:1     a manifest list: linux/arm64, linux/amd64
    - oci/app:1       an OCI index: linux/arm, windows/amd64, unknown/unknown (what
                      buildx lists for attestations)
    """
    reg = LocalRegistry().start()
    try:
        reg.push_image("arm/app", "1", architecture="arm64")
        reg.push_image("amd/app", "1", architecture="amd64")
        reg.push_list("multi/app", "1", [("linux", "arm64"), ("linux", "amd64")])
        reg.push_list(
            "oci/app",
            "1",
            [("linux", "arm"), ("windows", "amd64"), ("unknown", "unknown")],
            media_type=OCI_INDEX,
        )
        yield reg
    finally:
        reg.cleanup()


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    """Two hollow nodes, p-1 and p-2, reporting linux/x86_64."""
    f = start_farm(("p-", [], 2))
    try:
        yield f
    finally:
        f.cleanup()


def platforms(farm: Farm, service: str) -> list[dict[str, Any]]:
    inspect = json.loads(farm.ctl("service", "inspect", service, check=True).stdout)
    found: list[dict[str, Any]] = inspect[0]["spec"]["task"]["placement"].get("platforms", [])
    return found


def create(farm: Farm, name: str, image: str, *args: str) -> Any:
    return farm.ctl("service", "create", "-d", "--name", name, *args, image, check=True)


# -- the look-up itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("arm/app:1", [("linux", "arm64")]),
        ("amd/app:1", [("linux", "amd64")]),
        ("multi/app:1", [("linux", "arm64"), ("linux", "amd64")]),
        ("oci/app:1", [("linux", "arm"), ("windows", "amd64")]),  # unknown/unknown skipped
        ("multi/app:1-linux-arm64", [("linux", "arm64")]),  # a list's member by its tag
    ],
)
def test_lookup_reads_manifests_lists_and_configs(
    registry: LocalRegistry, image: str, expected: list[tuple[str, str]]
) -> None:
    ref = parse_reference(f"{registry.addr}/{image}")
    assert ref is not None
    assert lookup_platforms(ref) == expected


def test_lookup_by_digest(registry: LocalRegistry) -> None:
    descriptor = registry.push_image("bydigest/app", "1", architecture="s390x")
    ref = parse_reference(f"{registry.addr}/bydigest/app@{descriptor['digest']}")
    assert ref is not None
    assert lookup_platforms(ref) == [("linux", "s390x")]


def test_lookup_of_a_missing_image_fails_and_gives_no_platforms(registry: LocalRegistry) -> None:
    ref = parse_reference(f"{registry.addr}/arm/app:nosuchtag")
    assert ref is not None
    with pytest.raises(RegistryError, match="HTTP 404"):
        lookup_platforms(ref)
    assert image_platforms(f"{registry.addr}/arm/app:nosuchtag") == []


def test_lookup_with_an_anonymous_bearer_token(registry: LocalRegistry) -> None:
    """A registry that wants a token (as Docker Hub and most public ones do): the
    look-up asks the realm of the registry's challenge for one, for pulling."""
    tokens = TokenService(registry.dir)
    guarded = LocalRegistry(tokens, storage=registry.storage)
    try:
        guarded.start()
        image = f"{guarded.addr}/multi/app:1"
        with pytest.raises(urllib.error.HTTPError) as err:  # no token, no answer
            urllib.request.urlopen(f"http://{guarded.addr}/v2/multi/app/manifests/1", timeout=5)
        assert err.value.code == 401
        assert lookup_platforms(registry_ref(image)) == [
            ("linux", "arm64"),
            ("linux", "amd64"),
        ]
        assert tokens.scopes == ["repository:multi/app:pull"]
        # A single manifest's config blob is read with the same token.
        assert image_platforms(f"{guarded.addr}/arm/app:1") == [
            types_pb2.Platform(os="linux", architecture="arm64")
        ]
    finally:
        guarded.cleanup()
        tokens.stop()


def test_unreachable_registry_gives_no_platforms() -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RegistryError, match="cannot reach"):
        lookup_platforms(registry_ref(f"{closed}/arm/app:1"))
    assert image_platforms(f"{closed}/arm/app:1") == []


# -- through swarmctl, on hollow nodes ---------------------------------------------------


def test_arm64_only_image_stays_pending_with_the_platform_explanation(
    registry: LocalRegistry, farm: Farm, name: str
) -> None:
    create(farm, name, f"{registry.addr}/arm/app:1", "--replicas", "2")
    assert platforms(farm, name) == [{"os": "linux", "architecture": "arm64"}]
    farm.wait_pending(name, ARM_ONLY, 2)
    assert ARM_ONLY in farm.ps(name)


def test_image_of_the_nodes_platform_is_placed(
    registry: LocalRegistry, farm: Farm, name: str
) -> None:
    for image in ("amd/app:1", "multi/app:1"):
        service = f"{name}-{image.split('/')[0]}"
        create(farm, service, f"{registry.addr}/{image}", "--replicas", "2")
        assert {"os": "linux", "architecture": "amd64"} in platforms(farm, service)
        farm.wait_running(service, 2)


def test_no_resolve_image_leaves_the_platforms_alone(
    registry: LocalRegistry, farm: Farm, name: str
) -> None:
    create(farm, name, f"{registry.addr}/arm/app:1", "--no-resolve-image")
    assert platforms(farm, name) == []
    farm.wait_running(name, 1)


def test_explicit_platform_wins_over_the_image(
    registry: LocalRegistry, farm: Farm, name: str
) -> None:
    create(farm, name, f"{registry.addr}/arm/app:1", "--platform", "linux/amd64")
    assert platforms(farm, name) == [{"os": "linux", "architecture": "amd64"}]
    farm.wait_running(name, 1)


def test_unreachable_registry_creates_the_service_without_a_constraint(
    farm: Farm, name: str
) -> None:
    image = f"127.0.0.1:{free_port()}/arm/app:1"
    out = farm.ctl("--debug", "service", "create", "-d", "--name", name, image, check=True)
    assert "image platforms not resolved: no platform constraint" in out.stderr
    assert "Traceback" not in out.stderr
    assert platforms(farm, name) == []
    farm.wait_running(name, 1)
    # An image that names no registry host is never looked up.
    out = farm.ctl("--debug", "service", "create", "-d", "--name", f"{name}-b", "busybox:1")
    assert "names no registry host" in out.stderr
    assert platforms(farm, f"{name}-b") == []


def test_update_to_another_image_takes_its_platforms(
    registry: LocalRegistry, farm: Farm, name: str
) -> None:
    create(farm, name, f"{registry.addr}/amd/app:1")
    farm.wait_running(name, 1)
    farm.ctl("service", "update", "-d", "--image", f"{registry.addr}/arm/app:1", name, check=True)
    assert platforms(farm, name) == [{"os": "linux", "architecture": "arm64"}]
    farm.wait_pending(name, "no suitable node (unsupported platform on 2 nodes)")
    # Back to an image the nodes can run, without asking the registry: the platforms
    # stay as they were; with the look-up they follow the image.
    farm.ctl(
        "service",
        "update",
        "-d",
        "--no-resolve-image",
        "--image",
        f"{registry.addr}/amd/app:1",
        name,
        check=True,
    )
    assert platforms(farm, name) == [{"os": "linux", "architecture": "arm64"}]
    farm.ctl("service", "update", "-d", "--image", f"{registry.addr}/multi/app:1", name, check=True)
    assert len(platforms(farm, name)) == 2
    farm.wait_running(name, 1)
