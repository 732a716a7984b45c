"""Judging runs: `orch eval`, `orch trial`, the judge, and comparing or re-pricing recorded runs."""

# `orch trial --tune`'s default target, here so that the CLI can show it without importing the tuner (and,
# through it, the model stack: `orch --help` must stay quick)
DEFAULT_TARGET = 0.97
