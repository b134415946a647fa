"""Why the manager shut a task down when it did not end by itself (`Task.shutdown_reason`),
in the words `service ps` shows. The orchestrator writes them; the dispatcher reads them
to know which tasks of a returning node may be given back."""

from __future__ import annotations

# Its node was declared down: given back if the node returns before the replacement runs.
NODE_DOWN = "node down"
# Its node no longer meets the service's placement constraints.
CONSTRAINT_NOT_MET = "constraint no longer met"
