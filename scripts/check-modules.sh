#!/usr/bin/env bash
# Module hygiene: every module of the tree is in go.work, and every module's go.mod and
# go.sum are complete for what its packages and tests import on their own (GOWORK=off),
# which is how a module is built outside this workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

used=$(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p' | sort)
found=$(git ls-files -co --exclude-standard '*go.mod' | grep -v '/testdata/' | xargs -n1 dirname | sort)
if [ "$used" != "$found" ]; then
	echo "go.work and the modules in the tree differ (< go.work, > tree):" >&2
	diff <(echo "$used") <(echo "$found") >&2 || true
	exit 1
fi
status=0
for m in $used; do
	if ! diff=$(cd "$m" && GOWORK=off go mod tidy -diff 2>&1); then
		echo "$m/go.mod is not complete on its own: run (cd $m && GOWORK=off go mod tidy)" >&2
		echo "$diff" | grep -v '^go: downloading' | head -20 >&2
		status=1
	fi
done
# The shared plumbing depends on nothing of the project's own but migrations: devstack,
# which runs it, may import it, never the other way round (its tests may use testenv).
if cycle=$(cd common-events && go list -deps ./... | grep '^github.com/orderflow/devstack'); then
	echo "common-events imports devstack, which imports common-events: $cycle" >&2
	status=1
fi
exit $status
