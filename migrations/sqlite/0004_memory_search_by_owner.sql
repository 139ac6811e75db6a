-- Memory search matched the words across every user's memories and only then kept this user's:
-- its cost grew with the whole table. The full-text index now also holds each memory's owner as a
-- token (`search_owner`: the application id and sub in hex), and a search asks for
-- `search_owner : "<owner>" AND content : (<words>)`, which FTS5 answers by walking the owner's
-- short posting list. The owner is a generated column, so nothing else writes it.
ALTER TABLE memories ADD COLUMN search_owner TEXT
    GENERATED ALWAYS AS (lower(hex(application_id)) || 'x' || lower(hex(sub))) VIRTUAL;

DROP TRIGGER memories_fts_insert;
DROP TRIGGER memories_fts_delete;
DROP TRIGGER memories_fts_update;
DROP TABLE memories_fts;

CREATE VIRTUAL TABLE memories_fts USING fts5 (
    search_owner, content, content = 'memories', content_rowid = 'rowid'
);
INSERT INTO memories_fts (memories_fts) VALUES ('rebuild');

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, search_owner, content) VALUES (new.rowid, new.search_owner, new.content);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, search_owner, content)
        VALUES ('delete', old.rowid, old.search_owner, old.content);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, search_owner, content)
        VALUES ('delete', old.rowid, old.search_owner, old.content);
    INSERT INTO memories_fts (rowid, search_owner, content) VALUES (new.rowid, new.search_owner, new.content);
END;
