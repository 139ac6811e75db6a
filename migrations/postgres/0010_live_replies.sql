-- Live replies: an application may let replies go on after their client leaves (`resumable`), and
-- a conversation names the server instance producing its reply (`live_instance`, set with the
-- turn's user messages and cleared with its reply, in the same statements), so a resume or stop
-- reaching another instance knows whom to ask.
ALTER TABLE applications ADD COLUMN resumable BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE conversations ADD COLUMN live_instance TEXT;
