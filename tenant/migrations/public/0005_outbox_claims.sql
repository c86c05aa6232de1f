-- Each claim of a delivery gets its own token; settling is fenced by it, so
-- a worker whose lease expired can never record an outcome over a later
-- claim, even after a replay reset the attempt count.
ALTER TABLE outbox_deliveries ADD COLUMN claim_token uuid;
