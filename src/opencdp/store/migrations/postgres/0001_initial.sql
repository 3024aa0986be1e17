CREATE TABLE workspaces (
    id BIGSERIAL PRIMARY KEY,
    client_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    brand_id TEXT NOT NULL,
    UNIQUE (client_id, account_id, brand_id)
);

CREATE TABLE tokens (
    token_id TEXT PRIMARY KEY,
    secret_hash BYTEA NOT NULL,
    client_id TEXT NOT NULL,
    accounts JSONB,
    brands JSONB,
    scopes JSONB NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_time BIGINT NOT NULL,
    revoked_time BIGINT
);

-- Profile pks come from this one-row counter, not a sequence: a batch that may create
-- profiles reserves its pks by updating the row, and holds that row lock until it
-- commits. So pks grow in commit order, and a listing "by creation" that has reached
-- pk N will never later find a newly committed profile below N, with any number of
-- processes writing.
CREATE TABLE profile_pk_counter (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last BIGINT NOT NULL
);
INSERT INTO profile_pk_counter (last) VALUES (0);

CREATE TABLE profiles (
    pk BIGINT PRIMARY KEY,
    workspace_id BIGINT NOT NULL,
    id TEXT NOT NULL,
    external_id TEXT NOT NULL DEFAULT '',
    email TEXT,
    traits JSONB NOT NULL DEFAULT '{}',
    trait_stamps JSONB NOT NULL DEFAULT '{}',
    anonymous_ids JSONB NOT NULL DEFAULT '[]',
    audiences JSONB NOT NULL DEFAULT '[]',
    created_by JSONB NOT NULL DEFAULT '{}',
    created_time BIGINT NOT NULL,
    first_events JSONB NOT NULL DEFAULT '{}',
    last_events JSONB NOT NULL DEFAULT '{}',
    last_activity BIGINT,
    merged_into BIGINT
);
CREATE UNIQUE INDEX profiles_by_id ON profiles (workspace_id, id);
CREATE INDEX profiles_by_email ON profiles (workspace_id, email)
    WHERE email IS NOT NULL AND merged_into IS NULL;
CREATE INDEX profiles_by_activity ON profiles (workspace_id, last_activity, pk)
    WHERE merged_into IS NULL;
CREATE INDEX profiles_by_created ON profiles (workspace_id, pk)
    WHERE merged_into IS NULL;

CREATE TABLE identities (
    workspace_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    profile_pk BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, kind, value)
);
CREATE INDEX identities_by_profile ON identities (profile_pk);

CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    workspace_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    message_id TEXT,
    profile_pk BIGINT NOT NULL,
    action TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    received_time BIGINT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    raw JSONB NOT NULL
);
CREATE UNIQUE INDEX events_by_event_id ON events (event_id);
CREATE UNIQUE INDEX events_by_message_id ON events (workspace_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX events_by_time ON events (workspace_id, event_time, received_time, event_id);
CREATE INDEX events_by_action ON events (workspace_id, action, event_time, received_time, event_id);
CREATE INDEX events_by_profile ON events (profile_pk, event_time, received_time, event_id);

-- Per-database settings. 'cursor_key' signs scroll cursors (HMAC-SHA256); made once,
-- here, so every process on this database accepts the others' cursors.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
INSERT INTO settings (name, value) VALUES (
    'cursor_key',
    decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
);
