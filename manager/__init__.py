"""The swarmlet manager: keeps the desired state in etcd and drives the cluster toward it.

Parts, one package or module each: `store` (etcd, cache), `controlapi` (what swarmctl
calls), `orchestrator` (tasks from services), `scheduler` (tasks onto nodes),
`dispatcher` (agent sessions), `taskreaper`, `nodehealth`, `etcd_embedded`, and
`server` which wires them together.
"""
