"""The embedded store: one SQLite file in WAL mode, written by one writer process."""
