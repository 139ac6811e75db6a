-- Confidant schema, PostgreSQL flavour. Kept in step with migrations/sqlite/0001_initial.sql:
-- same tables, columns and indexes; timestamps are microseconds since the Unix epoch (BIGINT) so
-- both databases sort and decode them the same way.

CREATE TABLE operators (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE operator_sessions (
    id          UUID PRIMARY KEY,
    operator_id UUID NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES operator_sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    spent_at   BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE applications (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    application_id UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    operator_id    UUID NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin')),
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (application_id, operator_id)
);
CREATE INDEX memberships_operator ON memberships (operator_id, application_id);

CREATE TABLE providers (
    id                UUID PRIMARY KEY,
    application_id    UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    base_url          TEXT NOT NULL,
    api_key_encrypted BYTEA,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    CONSTRAINT providers_application_name_key UNIQUE (application_id, name)
);

CREATE TABLE agents (
    id             UUID PRIMARY KEY,
    application_id UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    instructions   TEXT NOT NULL,
    model          JSONB NOT NULL,
    memory         BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CONSTRAINT agents_application_name_key UNIQUE (application_id, name)
);

CREATE TABLE authentication_keys (
    id               UUID PRIMARY KEY,
    application_id   UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    agent_ids        JSONB,
    secret_encrypted BYTEA NOT NULL,
    master_key_version INTEGER NOT NULL,
    created_at       BIGINT NOT NULL,
    last_used_at     BIGINT,
    CONSTRAINT authentication_keys_application_name_key UNIQUE (application_id, name)
);
CREATE INDEX authentication_keys_application ON authentication_keys (application_id, id);

CREATE TABLE api_keys (
    id             UUID PRIMARY KEY,
    application_id UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    acl            JSONB NOT NULL,
    agent_ids      JSONB,
    prefix         TEXT NOT NULL,
    key_hash       BYTEA NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT,
    CONSTRAINT api_keys_application_name_key UNIQUE (application_id, name)
);

CREATE TABLE conversations (
    id             UUID PRIMARY KEY,
    application_id UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    sub            TEXT NOT NULL,
    external_id    TEXT NOT NULL,
    agent_id       UUID NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    title          TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CONSTRAINT conversations_user_external_id_key UNIQUE (application_id, sub, external_id)
);
CREATE INDEX conversations_user_agent_recent
    ON conversations (application_id, sub, agent_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id              UUID PRIMARY KEY,
    conversation_id UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    application_id  UUID NOT NULL,
    sub             TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('complete', 'incomplete')),
    client_id       TEXT,
    created_at      BIGINT NOT NULL,
    CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq)
);
CREATE INDEX messages_user ON messages (application_id, sub);
CREATE UNIQUE INDEX messages_conversation_client_id ON messages (conversation_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE memories (
    id             UUID PRIMARY KEY,
    application_id UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    sub            TEXT NOT NULL,
    agent_id       UUID REFERENCES agents (id) ON DELETE CASCADE,
    content        TEXT NOT NULL,
    metadata       JSONB NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    search         TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX memories_user_recent ON memories (application_id, sub, agent_id, id DESC);
CREATE INDEX memories_search ON memories USING GIN (search);
