"""Removes what a node's network data plane left on this host: the overlay bridges and
VXLAN devices, the nftables table and the FORWARD chain. An agent that stops leaves them
(as it leaves its containers running); `make down` and the tests take them away with

    python -m agent.network.cleanup

The engine's own networks are the engine's to remove (`docker network rm`).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from agent.network.dataplane import DataPlane
from agent.network.rules import FORWARD_REMOVAL, render_removal


def remove_host_state() -> None:
    """Everything of ours in this network namespace; what is not there is skipped."""
    DataPlane(ipaddress.IPv4Address("127.0.0.1")).apply([])
    if shutil.which("nft"):
        subprocess.run(
            ["nft", "-f", "-"], input=render_removal(), text=True, check=False,
            capture_output=True,
        )  # fmt: skip
    if shutil.which("iptables"):
        for args in FORWARD_REMOVAL:
            subprocess.run(["iptables", *args], check=False, capture_output=True)


if __name__ == "__main__":
    remove_host_state()
