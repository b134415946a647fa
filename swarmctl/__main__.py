"""`python -m swarmctl`: the same as the `swarmctl` console script."""

from swarmctl.launch import run

run()
