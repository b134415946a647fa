"""The swarmlet agent: runs on every host, holds a session with a manager, runs the tasks
assigned to its node on the local Docker engine and reports their states back.

Parts: `identity` (node id in the state dir), `session` (the gRPC session with a manager,
reconnecting with jittered backoff), `worker` (assignments to task runners),
`taskrunner` (one task through its states), `reporter` (batched status reports),
`executor` (the seam to what actually runs tasks: `docker`, or `hollow` for tests).
"""
