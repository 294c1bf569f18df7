#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume: one database per service, owned by
# a role of its own that alone (besides the superuser) may connect to it. The passwords come
# from the container's environment (docker-compose.yml).
set -euo pipefail
database() { # database role password
	psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
		-v db="$1" -v role="$2" -v password="$3" <<-'SQL'
		CREATE ROLE :"role" LOGIN PASSWORD :'password';
		CREATE DATABASE :"db" OWNER :"role";
		REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
		GRANT CONNECT ON DATABASE :"db" TO :"role";
	SQL
}
database orders order-service "$ORDER_SERVICE_DB_PASSWORD"
database payments payment-service "$PAYMENT_SERVICE_DB_PASSWORD"
database notifications notification-service "$NOTIFICATION_SERVICE_DB_PASSWORD"
database reconciliation reconciliation-service "$RECONCILIATION_SERVICE_DB_PASSWORD"
# reconciliation-service reads the payment simulator's ledger, as it would a real provider's
# list API: provider_reader may connect to payments, and the simulator's schema grants it
# SELECT on its ledger table alone.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres <<-'SQL'
	CREATE ROLE provider_reader NOLOGIN;
	GRANT CONNECT ON DATABASE payments TO provider_reader;
	GRANT provider_reader TO "reconciliation-service";
SQL
