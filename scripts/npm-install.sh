#!/usr/bin/env bash
# Installs the npm tools pinned in DIR/package-lock.json with npm ci, on the first run and
# again whenever the lock file changes: scripts/npm-install.sh DIR "what needs it"
set -euo pipefail
dir=$1 who=$2
if ! command -v npm >/dev/null 2>&1; then
	echo "$who: npm not found; it needs Node.js 20.19+ or 22.12+ with npm" >&2
	exit 1
fi
installed=$dir/node_modules/.installed-package-lock.json
if ! cmp -s "$dir/package-lock.json" "$installed"; then
	npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
	cp "$dir/package-lock.json" "$installed"
fi
