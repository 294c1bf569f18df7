#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, postgres) are on this machine, so tests
# can start a throwaway cluster. Skipped when TEST_DATABASE_URL points at a server.
set -euo pipefail
[ -n "${TEST_DATABASE_URL:-}" ] && exit 0
[ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ] && exit 0
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0
command -v initdb >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "PostgreSQL server binaries not found: install Debian's postgresql package (sudo apt-get install postgresql) or set TEST_DATABASE_URL" >&2
	exit 1
fi
echo "installing Debian's postgresql package for the tests' throwaway cluster"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
