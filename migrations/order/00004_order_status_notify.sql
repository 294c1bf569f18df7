-- +goose Up
-- Every status change of an order is announced on channel order_status, payload the order
-- id, when its transaction commits. Each order-service instance LISTENs, so a request
-- waiting for an order (Prefer: wait, the SSE stream) learns of the change whichever
-- instance made it.
-- +goose StatementBegin
CREATE FUNCTION notify_order_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', NEW.id::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER orders_status_changed AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_order_status();

-- +goose Down
DROP TRIGGER orders_status_changed ON orders;
DROP FUNCTION notify_order_status();
