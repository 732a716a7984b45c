"""The package version, in a leaf module that imports nothing: read it from here, not the package root."""

__version__ = "0.1.0"
