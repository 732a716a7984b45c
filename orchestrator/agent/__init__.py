"""The bundled agent: its graph, the controller (plan, pick and load tools), decisions, workhorse nodes."""
