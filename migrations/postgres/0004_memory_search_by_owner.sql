-- Nothing to change here: PostgreSQL filters memories by owner through the
-- (application_id, sub, agent_id, id) index and checks the tsvector on those rows. (SQLite's
-- full-text index gained the owner as a token in this version; both databases keep one list.)
SELECT 1;
