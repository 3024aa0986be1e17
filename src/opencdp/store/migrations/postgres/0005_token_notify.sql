-- Every committed change to tokens (a revocation) is told to the servers listening on
-- channel opencdp_tokens, so that they stop trusting the token records they cached
-- (store/postgres/listener.py). The payload is the table's schema: servers of other
-- schemas in the same database ignore it. NOTIFY is transactional: it is delivered
-- when the change commits, never for a change rolled back.
CREATE OR REPLACE FUNCTION notify_token_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opencdp_tokens', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tokens_changed ON tokens;
CREATE TRIGGER tokens_changed AFTER UPDATE OR DELETE OR TRUNCATE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION notify_token_change();
