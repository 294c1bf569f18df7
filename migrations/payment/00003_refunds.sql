-- +goose Up
-- Cancelled orders: a completed payment is refunded (REFUNDED, with the provider's refund
-- id); an order cancelled before it was charged gets a CANCELLED row, so a late
-- order.created finds it and never charges.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('COMPLETED', 'FAILED', 'REFUNDED', 'CANCELLED'));
ALTER TABLE payments ADD COLUMN refund_id text, ADD COLUMN refunded_at timestamptz;

-- +goose Down
ALTER TABLE payments DROP COLUMN refunded_at, DROP COLUMN refund_id;
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('COMPLETED', 'FAILED'));
