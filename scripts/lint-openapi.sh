#!/usr/bin/env bash
# Lints order-service's OpenAPI document with Redocly CLI's recommended rules
# (tools/openapi/redocly.yaml). The CLI is the version pinned in tools/openapi/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/npm-install.sh tools/openapi lint-openapi
# Nothing leaves the machine: no usage data, no check for a newer CLI.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec tools/openapi/node_modules/.bin/redocly lint --config tools/openapi/redocly.yaml order-service/internal/httpapi/openapi.yaml
