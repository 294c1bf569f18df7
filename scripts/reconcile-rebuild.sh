#!/usr/bin/env bash
# make reconcile-rebuild: asks the running devstack (make run) to rebuild
# reconciliation-service's read model by replay — the service stopped, its model dropped
# and replayed from the topics, the service started again — and prints its account.
set -euo pipefail
data=${ORDERFLOW_DATA_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.data}
pid=$(cat "$data/devstack.pid" 2>/dev/null) || { echo "reconcile-rebuild: no devstack is running ($data/devstack.pid): start one with make run" >&2; exit 1; }
log=$data/reconcile-rebuild.log
rm -f "$log"
kill -USR1 "$pid"
for _ in $(seq 600); do # within 5 minutes
	if [[ -f $log ]] && last=$(tail -n 1 "$log") && [[ $last == "rebuild: "* ]]; then
		cat "$log"
		[[ $last == "rebuild: done" ]]
		exit
	fi
	sleep 0.5
done
echo "reconcile-rebuild: no account after 5 minutes; see make run's output" >&2
exit 1
