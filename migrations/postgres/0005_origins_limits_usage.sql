-- Browsers, limits and usage.
-- allowed_origins: a JSON array of origin patterns (empty: any origin); an agent's own list, when
-- not empty, replaces its application's. limits: a JSON object of per-user limits that override the
-- server's defaults (a missing field: the default; null: no limit).
ALTER TABLE applications ADD COLUMN allowed_origins JSONB NOT NULL DEFAULT '[]';
ALTER TABLE applications ADD COLUMN limits JSONB NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN allowed_origins JSONB NOT NULL DEFAULT '[]';

-- Tokens used, per application, user, UTC day (days since 1970-01-01) and agent. Written in
-- batches (the turn adds to a counter in memory; a flusher adds the counters here). sub is ''
-- for stateless turns (a completions API key, no end user). No foreign key to agents: usage
-- outlives the agent it was spent on.
CREATE TABLE usage_daily (
    application_id UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    sub            TEXT NOT NULL,
    day            INTEGER NOT NULL,
    agent_id       UUID NOT NULL,
    turns          BIGINT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    PRIMARY KEY (application_id, sub, day, agent_id)
);
-- The application's usage by day (the usage endpoint without `sub`).
CREATE INDEX usage_daily_application_day ON usage_daily (application_id, day);
