"""A fleet: runs as durable jobs taken by worker processes that share one PostgreSQL (docs/deploy.md)."""
