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

CREATE SEQUENCE profiles_pk_seq;

-- created_xid is the creating transaction: listing by creation only hands out rows
-- whose transaction is older than every one still running, so none is skipped.
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
    merged_into BIGINT,
    created_xid XID8 NOT NULL DEFAULT pg_current_xact_id()
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
