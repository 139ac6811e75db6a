-- The highest message sequence number of each conversation, kept on the conversation row so an
-- append takes its numbers with one UPDATE ... RETURNING instead of a MAX() over the messages.
ALTER TABLE conversations ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
UPDATE conversations
   SET last_seq = COALESCE((SELECT MAX(seq) FROM messages WHERE messages.conversation_id = conversations.id), 0);
