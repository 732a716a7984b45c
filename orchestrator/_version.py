"""The package version, in a leaf module that imports nothing: read it from here, not the package root."""

__version__ = "0.1.0"

# The distribution's name on PyPI (the import name stays `orchestrator`, which is taken there).
DIST_NAME = "racehorse-orchestrator"
