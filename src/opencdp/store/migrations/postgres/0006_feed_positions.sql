-- The change feed (store/feed.py) follows a workspace's events by position. seq
-- (BIGSERIAL) cannot serve: its values are handed out before commit, so a transaction
-- that took seq 10 may commit after one that took 11, and a reader that moved past 11
-- would skip 10. A position is taken from the workspace's row here, updated in the
-- writing transaction just before its events are inserted (postgres/append.py): the
-- row lock is held until commit, so the next transaction of the workspace gets higher
-- positions only after this one has committed, and PostgreSQL makes a commit visible
-- before it releases its locks. A snapshot that sees position P therefore sees every
-- position below P that will ever exist (a rolled-back transaction leaves a gap).
-- Written to run again harmlessly (the numbering only fills positions still empty).
CREATE TABLE IF NOT EXISTS feed_clocks (
    workspace_id BIGINT PRIMARY KEY,
    last BIGINT NOT NULL
);

ALTER TABLE events ADD COLUMN IF NOT EXISTS position BIGINT;
UPDATE events SET position = numbered.n
FROM (SELECT seq, row_number() OVER (PARTITION BY workspace_id ORDER BY seq) AS n
      FROM events WHERE position IS NULL) AS numbered
WHERE events.seq = numbered.seq;
ALTER TABLE events ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_position ON events (workspace_id, position);

INSERT INTO feed_clocks (workspace_id, last)
SELECT workspace_id, max(position) FROM events GROUP BY workspace_id
ON CONFLICT (workspace_id) DO UPDATE SET last = greatest(feed_clocks.last, excluded.last);
