"""PostgreSQL access: the pool, the named queries of sql/queries.sql, and the migration runner."""
