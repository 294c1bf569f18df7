#!/usr/bin/env bash
# Validates and lints the event contract, common-events/events/asyncapi.yaml, with the
# AsyncAPI Initiative's parser (@asyncapi/parser, pinned in tools/asyncapi/package-lock.json;
# the @asyncapi/cli releases that bundle it now want Node.js 24, the parser runs on 20).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/npm-install.sh tools/asyncapi lint-asyncapi
exec node tools/asyncapi/lint.mjs common-events/events/asyncapi.yaml
