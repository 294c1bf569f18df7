-- +goose Up
-- The version of each order, what order.state's records carry: 1 when placed, one more
-- with each change, so a consumer of the entity topic keeps the highest it has seen and a
-- redelivered or reordered record cannot move an order back. An order made before starts
-- at the number of its changes so far.
ALTER TABLE orders ADD COLUMN version bigint NOT NULL DEFAULT 1;
UPDATE orders o SET version = (SELECT count(*) FROM order_history h WHERE h.order_id = o.id)
WHERE o.status <> 'PENDING_PAYMENT';

-- +goose Down
ALTER TABLE orders DROP COLUMN version;
