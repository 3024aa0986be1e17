-- The change feed (store/feed.py) follows a workspace's events by position: their seq.
-- One writer at a time holds the write lock, so seq grows in commit order; this index
-- is (workspace_id, seq), since SQLite ends every index with the rowid.
CREATE INDEX IF NOT EXISTS events_by_position ON events (workspace_id);

-- A position is never handed out twice. SQLite gives a new row max(seq) + 1, which
-- would reuse the positions of the newest events once they are deleted (an erasure),
-- and a consumer already past them would skip the new events. So every deleted seq
-- raises this high-water mark, and the writers give new events positions above both
-- it and max(seq) (sqlite/append.py, sqlite/bulk.py).
CREATE TABLE IF NOT EXISTS feed_clock (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO feed_clock (one, last) SELECT 1, coalesce(max(seq), 0) FROM events;

CREATE TRIGGER IF NOT EXISTS events_deleted_keep_positions AFTER DELETE ON events
BEGIN
    UPDATE feed_clock SET last = OLD.seq WHERE last < OLD.seq;
END;
