#!/usr/bin/env bash
# Lints order-service's OpenAPI document with Redocly CLI's recommended rules
# (tools/openapi/redocly.yaml). The CLI is the version pinned in tools/openapi/package-lock.json,
# installed with npm ci on the first run and again whenever the lock file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=tools/openapi
if ! command -v npm >/dev/null 2>&1; then
	echo "lint-openapi: npm not found; Redocly CLI needs Node.js 20.19+ or 22.12+ with npm" >&2
	exit 1
fi
installed=$tools/node_modules/.installed-package-lock.json
if ! cmp -s "$tools/package-lock.json" "$installed"; then
	npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error
	cp "$tools/package-lock.json" "$installed"
fi
# Nothing leaves the machine: no usage data, no check for a newer CLI.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec "$tools/node_modules/.bin/redocly" lint --config "$tools/redocly.yaml" order-service/internal/httpapi/openapi.yaml
