"""Bundled offline tool catalog: small themed packs of deterministic langchain-core tools."""
