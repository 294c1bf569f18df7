#!/usr/bin/env bash
# python-venv.sh NAME REQUIREMENTS VENV: makes sure VENV holds what the pinned REQUIREMENTS
# file says (pip install -r), made again whenever the file changes. NAME is for the
# messages. Schemathesis and localstripe are installed this way.
set -euo pipefail
name=$1 req=$2 venv=$3
if ! command -v python3 >/dev/null 2>&1; then
	echo "$name: python3 not found: it needs Python 3.9 or later with venv" >&2
	exit 1
fi
if ! cmp -s "$req" "$venv/.requirements"; then
	rm -rf "$venv"
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
	cp "$req" "$venv/.requirements"
fi
