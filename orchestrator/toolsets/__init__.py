"""Where tools come from and how they run: tool sources, the catalog, retrieval, MCP, the process pool."""
