-- +goose Up
-- A notification decided against (a confirmation for an order the customer cancelled) is
-- kept as SUPPRESSED: operators see why no email went out, and a redelivery of its event
-- finds the kind taken and sends nothing either.
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check CHECK (status IN ('SENT', 'SUPPRESSED'));

-- +goose Down
DELETE FROM notifications WHERE status = 'SUPPRESSED';
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check CHECK (status IN ('SENT'));
