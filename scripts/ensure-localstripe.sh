#!/usr/bin/env bash
# Makes sure localstripe, the version tools/localstripe/requirements.txt pins, is installed
# in .data/localstripe-venv (again whenever the file changes), and prints the Python that
# runs tools/localstripe/serve.py. testenv.StartLocalstripe calls it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req=$root/tools/localstripe/requirements.txt
venv=${ORDERFLOW_DATA_DIR:-$root/.data}/localstripe-venv
"$root/scripts/python-venv.sh" localstripe "$req" "$venv"
echo "$venv/bin/python"
