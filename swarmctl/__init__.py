"""swarmctl: the command-line client of swarmlet, shaped like `docker service` / `docker node`.

It talks to a manager's `swarmlet.Control` gRPC API (protos/control.proto). One module
per noun (service, node, task, cluster) holds that noun's commands; the rest is shared
plumbing: the connection (client, with tlscheck for certificate trouble), flag parsing
(parsing), tables and JSON (output), what the tasks say about a service's convergence
(convergence) and its display of `service create/update/scale` (progress), the
placement preview of `--dry-run` (preview) and the waiting of `service rebalance`
(rebalance).
"""
