"""`python -m swarmctl`: the same as the `swarmctl` console script."""

from swarmctl.main import run

run()
