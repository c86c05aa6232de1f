-- Access (issue 3): the Kratos identity's own updated_at, so that user rows
-- written by the registration web hook and by sessions apply "newer data
-- wins": a replayed or reordered hook delivery never overwrites a newer
-- profile.
ALTER TABLE users ADD COLUMN IF NOT EXISTS identity_updated_at timestamptz;
