-- +goose Up
-- Idempotency keys belong to the customer who sent them: two customers who happen to
-- pick the same key place two orders, and neither can replay the other's response.
ALTER TABLE idempotency_keys ADD COLUMN customer_id uuid;
UPDATE idempotency_keys k SET customer_id = o.customer_id FROM orders o WHERE o.id = k.order_id;
DELETE FROM idempotency_keys WHERE customer_id IS NULL;
ALTER TABLE idempotency_keys
    ALTER COLUMN customer_id SET NOT NULL,
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD PRIMARY KEY (customer_id, key);

-- +goose Down
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
DELETE FROM idempotency_keys a USING idempotency_keys b
    WHERE a.key = b.key AND (a.created_at, a.ctid) < (b.created_at, b.ctid);
ALTER TABLE idempotency_keys DROP COLUMN customer_id, ADD PRIMARY KEY (key);
