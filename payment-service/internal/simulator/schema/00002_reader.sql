-- +goose Up
-- reconciliation-service reads the provider's charges as it would a real provider's list
-- API: through provider_reader, a role the stack makes (devstack, compose's init.sh), which
-- may read this table and nothing else of the database. Where no such role was made (a
-- test's database) there is nothing to grant.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'provider_reader') THEN
        GRANT SELECT ON provider_charges TO provider_reader;
    END IF;
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'provider_reader') THEN
        REVOKE SELECT ON provider_charges FROM provider_reader;
    END IF;
END $$;
-- +goose StatementEnd
