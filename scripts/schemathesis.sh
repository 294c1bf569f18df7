#!/usr/bin/env bash
# Schemathesis against order-service's OpenAPI document on a devstack of its own: its
# checks on every response (no server error, status codes, content types, headers and
# bodies as documented, bad input refused, good input accepted…) in the examples, coverage
# and fuzzing phases, then its stateful phase, which follows the document's links
# (place an order, then get, follow, cancel it and read its history). It speaks as the
# demo customer, with the token the devstack writes; its ignored_auth check sends requests
# without it, and with a wrong one, and wants them refused.
# Schemathesis is the version tools/schemathesis/requirements.txt pins, installed into
# .data/schemathesis-venv on the first run and whenever the file changes.
#   SCHEMATHESIS_MAX_EXAMPLES (default 100) bounds the examples per operation and phase.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
req=tools/schemathesis/requirements.txt
venv=${ORDERFLOW_DATA_DIR:-$root/.data}/schemathesis-venv
scripts/python-venv.sh schemathesis "$req" "$venv"

# A devstack of its own, on free ports and a throwaway data folder.
work=$(mktemp -d)
ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(7)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
mkdir -p .data/bin
go build -o .data/bin/devstack ./devstack/cmd/devstack
ORDERFLOW_DATA_DIR=$work KAFKA_PORT=${ports[0]} PG_PORT=${ports[1]} ORDER_PORT=${ports[2]} \
	ORDER_RATE_LIMIT=10000 HTTP_RATE_LIMIT=10000 HTTP_RATE_BURST=10000 PAYMENT_PORT=${ports[3]} NOTIFICATION_PORT=${ports[4]} ISSUER_PORT=${ports[5]} RECONCILIATION_PORT=${ports[6]} .data/bin/devstack >"$work/devstack.log" 2>&1 &
devstack=$!
stop() {
	kill -INT "$devstack" 2>/dev/null || true
	wait "$devstack" 2>/dev/null || true
	rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 1 240); do
	grep -q "orderflow is up" "$work/devstack.log" && break
	if ! kill -0 "$devstack" 2>/dev/null; then
		cat "$work/devstack.log" >&2
		echo "schemathesis: the devstack did not start" >&2
		exit 1
	fi
	sleep 0.5
done
grep -q "orderflow is up" "$work/devstack.log" || { echo "schemathesis: the devstack is not up after 2 minutes" >&2; exit 1; }

# No colours, no progress bars: a log CI can read. Nothing leaves the machine.
export SCHEMATHESIS_TELEMETRY=false
"$venv/bin/st" --no-color --config-file tools/schemathesis/schemathesis.toml run order-service/internal/httpapi/openapi.yaml \
	--url "http://127.0.0.1:${ports[2]}" \
	--header "Authorization: Bearer $(cat "$work/tokens/customer.jwt")" \
	--checks all \
	--max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
	--request-timeout 10 \
	--seed "${SCHEMATHESIS_SEED:-1}" \
	--suppress-health-check too_slow,filter_too_much
