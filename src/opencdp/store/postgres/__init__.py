"""The scale-out store: PostgreSQL, shared by any number of server processes."""
