"""Running graphs: the `Orchestrator` (project loading, compiling, driving), checkpoints, the store lease."""
