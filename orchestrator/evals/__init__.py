"""Judging runs: `orch eval`, `orch trial`, the judge, and comparing or re-pricing recorded runs."""
