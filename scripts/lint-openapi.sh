#!/usr/bin/env bash
# Lints the services' OpenAPI documents, order-service's and payment-service's, with Redocly
# CLI's recommended rules (tools/openapi/redocly.yaml). The CLI is the version pinned in
# tools/openapi/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/npm-install.sh tools/openapi lint-openapi
# Nothing leaves the machine: no usage data, no check for a newer CLI.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec tools/openapi/node_modules/.bin/redocly lint --config tools/openapi/redocly.yaml \
	order-service/internal/httpapi/openapi.yaml payment-service/internal/httpapi/openapi.yaml
