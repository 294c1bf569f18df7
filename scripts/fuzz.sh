#!/usr/bin/env bash
# Fuzzes one target for a while and fails unless it really ran: a target that was renamed
# or moved would otherwise "pass" as "no tests to run".
#   scripts/fuzz.sh MODULE TARGET DURATION PACKAGE
set -uo pipefail
cd "$(dirname "$0")/../$1" || exit 1
out=$(go test -run='^$' -fuzz="^$2\$" -fuzztime="$3" "$4" 2>&1)
status=$?
echo "$out" | tail -3
if [ $status -ne 0 ]; then
	echo "$out" >&2
	exit $status
fi
if ! grep -q 'fuzz: elapsed' <<<"$out"; then
	echo "fuzz: $2 did not run in $1/$4: is it still there?" >&2
	exit 1
fi
