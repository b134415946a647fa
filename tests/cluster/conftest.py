"""The local 3-host cluster (scripts/cluster.sh up 3) for the tests of this folder:
built once for the module, always taken down afterwards, also when a test or the
build itself fails. A machine that cannot build it fails the tests, saying why. The
teardown also checks that `down` left nothing behind (namespaces, bridge, processes,
.run/cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusterlib import ClusterUnavailableError, LocalCluster, leftovers


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    log: Path = tmp_path_factory.mktemp("cluster") / "cluster.log"
    try:
        cluster = LocalCluster.up(3, log_path=log)
    except ClusterUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.down()
        left = leftovers()
        assert not left, "scripts/cluster.sh down left behind:\n  " + "\n  ".join(left)
