"""Calling a model: binding a slot, the run context, the one model call, the slot model, `orch ask`."""
