-- +goose Up
-- A payment is claimed (CHARGING) before the provider is asked, in a statement of its own,
-- outside the transaction that records the outcome: no connection or lock is held while
-- the provider thinks, and a cancellation that arrives meanwhile sees the charge under
-- way and waits for its outcome instead of racing it.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('CHARGING', 'COMPLETED', 'FAILED', 'REFUNDED', 'CANCELLED'));

-- +goose Down
DELETE FROM payments WHERE status = 'CHARGING';
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('COMPLETED', 'FAILED', 'REFUNDED', 'CANCELLED'));
