"""`python -m orchestrator.cli` runs the CLI, as `python -m orchestrator` does."""

import sys

from orchestrator.cli import main

sys.exit(main())
