-- An end user's vote on an assistant message of their own: one per message, gone with it.
CREATE TABLE feedback (
    message_id      UUID PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    application_id  UUID NOT NULL,
    sub             TEXT NOT NULL,
    agent_id        UUID NOT NULL,
    conversation_id UUID NOT NULL,
    vote            TEXT NOT NULL CHECK (vote IN ('up', 'down')),
    comment         TEXT,
    tags            JSONB NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- Operators list an application's feedback newest first (by agent and vote as filters); the
-- user's export and erase find theirs.
CREATE INDEX feedback_application_recent ON feedback (application_id, updated_at DESC, message_id DESC);
CREATE INDEX feedback_user ON feedback (application_id, sub);
