-- Per-database settings. 'cursor_key' signs scroll cursors (HMAC-SHA256): generated
-- once, here, so every process on this database accepts the others' cursors.
-- randomblob() draws from SQLite's ChaCha20 generator, seeded by the OS.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
INSERT INTO settings (name, value) VALUES ('cursor_key', randomblob(32));
