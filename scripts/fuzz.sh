#!/usr/bin/env bash
# Fuzzes one target for a while and fails unless it really ran: a target that was renamed
# or moved would otherwise "pass" as "no tests to run".
#   scripts/fuzz.sh MODULE TARGET DURATION PACKAGE
#
# Go 1.26's fuzzing coordinator may report a bare "context deadline exceeded" as the
# target's failure when -fuzztime ends while a worker is busy (go.dev/issue/75804, fixed
# in Go 1.27): no input written, nothing to reproduce. Such a run is fuzzed once more; a
# real finding always writes its failing input, and fails at once.
set -uo pipefail
cd "$(dirname "$0")/../$1" || exit 1
fuzz() {
	out=$(go test -run='^$' -fuzz="^$2\$" -fuzztime="$3" "$4" 2>&1)
	status=$?
}
fuzz "$@"
if [ $status -ne 0 ] && grep -q 'context deadline exceeded' <<<"$out" &&
	! grep -q -e 'Failing input written' -e 'panic:' <<<"$out"; then
	echo "fuzz: $2 ended with the coordinator's deadline race (go.dev/issue/75804), no input found; fuzzing it once more" >&2
	fuzz "$@"
fi
echo "$out" | tail -3
if [ $status -ne 0 ]; then
	echo "$out" >&2
	exit $status
fi
if ! grep -q 'fuzz: elapsed' <<<"$out"; then
	echo "fuzz: $2 did not run in $1/$4: is it still there?" >&2
	exit 1
fi
