"""What the manager, the agent and swarmctl all need: the generated API modules
(`common.api`), logging set-up, ids, time conversions, task-state names and the
supervisor that keeps background tasks from dying silently."""
