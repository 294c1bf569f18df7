-- +goose Up
-- A charge whose outcome the provider tells later (Stripe: 3-D Secure, processing) stays
-- CHARGING with the time it was told so; a webhook settles it, or past the payment
-- deadline the provider's records do. The index holds only those still waiting (set back
-- to NULL when the outcome is recorded), so the sweep that looks for them reads a handful
-- of entries, and payments that never waited keep their updates HOT.
ALTER TABLE payments ADD COLUMN pending_since timestamptz;
CREATE INDEX payments_pending ON payments (created_at) WHERE pending_since IS NOT NULL;

-- +goose Down
DROP INDEX payments_pending;
ALTER TABLE payments DROP COLUMN pending_since;
