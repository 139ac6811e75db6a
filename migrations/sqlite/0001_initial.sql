-- Confidant schema, SQLite flavour. Kept in step with migrations/postgres/0001_initial.sql:
-- same tables, columns and indexes; ids are 16-byte UUID blobs, timestamps are microseconds since
-- the Unix epoch (INTEGER), JSON is TEXT.

CREATE TABLE operators (
    id            BLOB PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- One row per login: the refresh-token family. Revoking it ends its access and refresh tokens.
CREATE TABLE operator_sessions (
    id          BLOB PRIMARY KEY NOT NULL,
    operator_id BLOB NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);

CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    session_id BLOB NOT NULL REFERENCES operator_sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    spent_at   INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE applications (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE memberships (
    application_id BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    operator_id    BLOB NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin')),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (application_id, operator_id)
);
CREATE INDEX memberships_operator ON memberships (operator_id, application_id);

CREATE TABLE providers (
    id                BLOB PRIMARY KEY NOT NULL,
    application_id    BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    base_url          TEXT NOT NULL,
    api_key_encrypted BLOB,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CONSTRAINT providers_application_name_key UNIQUE (application_id, name)
);

CREATE TABLE agents (
    id             BLOB PRIMARY KEY NOT NULL,
    application_id BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    instructions   TEXT NOT NULL,
    model          TEXT NOT NULL,
    memory         INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT agents_application_name_key UNIQUE (application_id, name)
);

-- agent_ids: JSON array of agent ids, NULL when the key covers all agents.
CREATE TABLE authentication_keys (
    id               BLOB PRIMARY KEY NOT NULL,
    application_id   BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    agent_ids        TEXT,
    secret_encrypted BLOB NOT NULL,
    master_key_version INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    last_used_at     INTEGER,
    CONSTRAINT authentication_keys_application_name_key UNIQUE (application_id, name)
);
CREATE INDEX authentication_keys_application ON authentication_keys (application_id, id);

CREATE TABLE api_keys (
    id             BLOB PRIMARY KEY NOT NULL,
    application_id BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    acl            TEXT NOT NULL,
    agent_ids      TEXT,
    prefix         TEXT NOT NULL,
    key_hash       BLOB NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    CONSTRAINT api_keys_application_name_key UNIQUE (application_id, name)
);

-- User data. Every row carries (application_id, sub); every query filters on both.
-- external_id is the conversation id the client sees: unique per user, not globally.
CREATE TABLE conversations (
    id             BLOB PRIMARY KEY NOT NULL,
    application_id BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    sub            TEXT NOT NULL,
    external_id    TEXT NOT NULL,
    agent_id       BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    title          TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT conversations_user_external_id_key UNIQUE (application_id, sub, external_id)
);
-- "my conversations with this agent, newest first", keyset on (updated_at, id).
CREATE INDEX conversations_user_agent_recent
    ON conversations (application_id, sub, agent_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id              BLOB PRIMARY KEY NOT NULL,
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    application_id  BLOB NOT NULL,
    sub             TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('complete', 'incomplete')),
    client_id       TEXT,
    created_at      INTEGER NOT NULL,
    CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq)
);
CREATE INDEX messages_user ON messages (application_id, sub);
CREATE UNIQUE INDEX messages_conversation_client_id ON messages (conversation_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE memories (
    id             BLOB PRIMARY KEY NOT NULL,
    application_id BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    sub            TEXT NOT NULL,
    agent_id       BLOB REFERENCES agents (id) ON DELETE CASCADE,
    content        TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX memories_user_recent ON memories (application_id, sub, agent_id, id DESC);

-- Full-text index over memories.content (external content table, kept in step by triggers).
CREATE VIRTUAL TABLE memories_fts USING fts5 (content, content = 'memories', content_rowid = 'rowid');
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
END;
