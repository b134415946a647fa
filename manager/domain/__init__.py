"""The manager's domain rules, in one place and free of I/O: what a placement
constraint or platform list means for a node, whether a node matches a task's
placement, how a task is made from a service, the defaults a stored spec gets, and the
`Placer` protocol through which the orchestrator and the control API reach the
scheduler.

The reconcilers (scheduler, orchestrator, task reaper, node health) and the control
API import these rules and the store, never each other. This package imports nothing
of the manager: only `common` (where the rules swarmctl and the agent apply too live:
node predicates, service modes, rollout settings, defaults). The import contracts in
pyproject.toml (`lint-imports`) hold the layers to that.
"""
