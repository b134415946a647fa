"""The ranges of the numbers in specs, in one place for the two sides that check them.

swarmctl refuses a flag value outside its range before sending anything (a clear usage
error instead of protobuf's "Value out of range"), and the control API's validation
refuses the same values from any other client (INVALID_ARGUMENT). Where the protobuf
type is the only bound, the type's range is the limit.
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

# Replicas (and a job's completions and concurrency) at most: every slot is planned in
# one pass of the orchestrator, on the manager's event loop, and gets a task in etcd. A
# typo'd count of billions used to freeze the manager for good.
MAX_REPLICAS = 100_000

# Docker and SwarmKit keep durations as int64 nanoseconds (Go's time.Duration): about
# 292 years at most. Longer ones would also push times computed from them (a restart
# due at now + delay) past what a protobuf Timestamp can hold.
MAX_DURATION_NANOS = INT64_MAX
MAX_DURATION_SECONDS = MAX_DURATION_NANOS // 10**9

MAX_PORT = 65535

# ResourceRequirements are int64: nano_cpus (billionths of a CPU) and memory_bytes.
MAX_NANO_CPUS = INT64_MAX
MAX_MEMORY_BYTES = INT64_MAX
