-- Every query on messages names the owner (application, sub) and the conversation, and reads in
-- sequence order. One index that matches all of it lets the planner go straight to the
-- conversation's messages in order, instead of intersecting the owner index (which grows with all
-- of a user's messages) with the (conversation_id, seq) one. The owner prefix still serves erase.
DROP INDEX messages_user;
CREATE INDEX messages_user ON messages (application_id, sub, conversation_id, seq);
