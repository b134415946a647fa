"""Benchmarks of swarmlet against Docker Swarm mode and the bare Docker engine.

`python -m bench.convergence` (or `make bench-convergence`) is the convergence
benchmark; bench/README.md and docs/performance.md describe it.
"""
