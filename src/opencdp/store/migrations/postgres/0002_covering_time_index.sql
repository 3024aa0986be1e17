-- The feed's time index also carries the action, so `exclude` filters (and the
-- total they count) can be answered by an index-only scan.
DROP INDEX events_by_time;
CREATE INDEX events_by_time ON events (workspace_id, event_time, received_time, event_id)
    INCLUDE (action);
