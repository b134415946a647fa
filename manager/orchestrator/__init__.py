"""The orchestrator (leader only): turns services into tasks (`orchestrator`, with the
per-mode planners `replicated`, `global_mode` and `jobs`), rolls updates out
(`updater`), and deletes the tasks nobody needs any more (`taskreaper`)."""
