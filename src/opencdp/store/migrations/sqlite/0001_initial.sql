-- Workspaces are interned to small integers so every index stays narrow.
CREATE TABLE workspaces (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    brand_id TEXT NOT NULL,
    UNIQUE (client_id, account_id, brand_id)
);

CREATE TABLE tokens (
    token_id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    client_id TEXT NOT NULL,
    accounts TEXT,            -- JSON array, NULL = every account
    brands TEXT,              -- JSON array, NULL = every brand
    scopes TEXT NOT NULL,     -- JSON array
    name TEXT NOT NULL DEFAULT '',
    created_time INTEGER NOT NULL,
    revoked_time INTEGER
);

-- One row per customer. A profile merged into another keeps its row with
-- merged_into set, so its id still resolves.
CREATE TABLE profiles (
    pk INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL,
    id TEXT NOT NULL,
    external_id TEXT NOT NULL DEFAULT '',
    email TEXT,
    traits TEXT NOT NULL DEFAULT '{}',
    trait_stamps TEXT NOT NULL DEFAULT '{}',
    anonymous_ids TEXT NOT NULL DEFAULT '[]',
    audiences TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL DEFAULT '{}',
    created_time INTEGER NOT NULL,
    first_events TEXT NOT NULL DEFAULT '{}',
    last_events TEXT NOT NULL DEFAULT '{}',
    last_activity INTEGER,
    merged_into INTEGER
);
CREATE UNIQUE INDEX profiles_by_id ON profiles (workspace_id, id);
CREATE INDEX profiles_by_email ON profiles (workspace_id, email)
    WHERE email IS NOT NULL AND merged_into IS NULL;
CREATE INDEX profiles_by_activity ON profiles (workspace_id, last_activity, pk)
    WHERE merged_into IS NULL;
CREATE INDEX profiles_by_created ON profiles (workspace_id, pk)
    WHERE merged_into IS NULL;

-- Which profile a userId ('user') or anonymousId ('anon') belongs to: the primary
-- key makes one profile per userId per workspace a database rule.
CREATE TABLE identities (
    workspace_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    profile_pk INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX identities_by_profile ON identities (profile_pk);

-- seq is the commit order; event times are milliseconds since the epoch, UTC.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    message_id TEXT,
    profile_pk INTEGER NOT NULL,
    action TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    received_time INTEGER NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    raw TEXT NOT NULL
);
CREATE UNIQUE INDEX events_by_event_id ON events (event_id);
CREATE UNIQUE INDEX events_by_message_id ON events (workspace_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX events_by_time ON events (workspace_id, event_time, received_time, event_id);
CREATE INDEX events_by_action ON events (workspace_id, action, event_time, received_time, event_id);
CREATE INDEX events_by_profile ON events (profile_pk, event_time, received_time, event_id);
