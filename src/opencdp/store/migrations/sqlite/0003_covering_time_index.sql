-- The feed's time index also carries the action, so `exclude` filters (and the
-- total they count) are answered from the index without reading event rows.
DROP INDEX events_by_time;
CREATE INDEX events_by_time ON events (workspace_id, event_time, received_time, event_id, action);
