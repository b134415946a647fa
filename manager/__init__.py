"""The swarmlet manager: keeps the desired state in etcd and drives the cluster toward it.

Parts, one package each: `store` (etcd, its cache, the embedded etcd), `controlapi`
(what swarmctl calls), `orchestrator` (tasks from services, updates, the task reaper),
`scheduler` (tasks onto nodes), `dispatcher` (agent sessions and node health),
`domain` (the rules those share, imported by them and importing none of them), `ca`
(certificates and joining), `leadership` (leases, membership, election), `streams`
(events and logs), and `daemon`, the `swarm-manager` process that wires them together.
"""
