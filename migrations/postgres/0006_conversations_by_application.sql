-- Administrators browse an application's conversations newest first, and purges find the oldest:
-- both walk this index (the per-user one starts with sub). Costs one more index entry to move per
-- turn (a turn updates its conversation's updated_at).
CREATE INDEX conversations_application_recent ON conversations (application_id, updated_at DESC, id DESC);
