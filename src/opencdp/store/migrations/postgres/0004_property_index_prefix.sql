-- A declared property index keeps the first 256 characters of the value
-- (postgres.dialect, property_key): a whole value longer than an index entry (about 2,700
-- bytes) failed the insert of its event and of every call committed with it.
-- Rebuild the indexes declared before, each from its own expression.
DO $$
DECLARE
    declared record;
    expression text;
BEGIN
    FOR declared IN
        SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'events'::regclass AND c.relname LIKE 'events\_by\_property\_%'
    LOOP
        expression := pg_get_indexdef(declared.oid, 2, true);
        CONTINUE WHEN expression LIKE '"left"(%';  -- built with the prefix already
        EXECUTE format('DROP INDEX %I', declared.relname);
        EXECUTE format(
            'CREATE INDEX %I ON events (workspace_id, left(%s, 256), event_time,'
            ' received_time, event_id) INCLUDE (action)',
            declared.relname, expression
        );
    END LOOP;
END $$;
