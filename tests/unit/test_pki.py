"""Certificate renewal timing (common/pki.py): a random point between 50% and 80% of
the certificate's lifetime, so that a cluster's nodes do not all renew at once."""

from __future__ import annotations

import random
import time

import pytest

from common import pki

CA = pki.RootCA.create()


@pytest.mark.parametrize("lifetime", [60.0, 3600.0, pki.DEFAULT_NODE_CERT_LIFETIME])
def test_renewal_time_falls_in_50_to_80_percent_of_the_lifetime(lifetime: float) -> None:
    issued = time.time()
    _, cert = CA.issue(node_id="n1", role=pki.ROLE_WORKER, cluster_id="c1", lifetime=lifetime)
    # Certificates keep whole seconds: allow two either way.
    slack = 2 / lifetime
    rng = random.Random(7)
    shares = [(pki.renewal_time(cert, rng) - issued) / lifetime for _ in range(2000)]
    assert 0.5 - slack <= min(shares)
    assert max(shares) <= 0.8 + slack
    # Spread over the whole range, not one fixed point.
    assert min(shares) < 0.52 + slack
    assert max(shares) > 0.78 - slack
    for _ in range(20):  # the module's own random generator
        share = (pki.renewal_time(cert) - issued) / lifetime
        assert 0.5 - slack <= share <= 0.8 + slack
