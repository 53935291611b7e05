#!/usr/bin/env bash
# Makes the test venv, target/test-venv (or $WSGI_GATEWAY_TEST_VENV), from the pinned CPython
# 3.11.7 with the packages pinned in tools/test-requirements.txt (Flask, Django).
# Idempotent: when the venv exists and was made from the same requirements, it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${WSGI_GATEWAY_TEST_PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3.11}"
VENV="${WSGI_GATEWAY_TEST_VENV:-target/test-venv}"
REQS=tools/test-requirements.txt
STAMP="$VENV/.test-venv-stamp"

if [ ! -x "$PYTHON" ]; then
    echo "make-test-venv: $PYTHON not found" >&2
    exit 1
fi

want="$("$PYTHON" -c 'import sys; print(sys.version)')
$(cat "$REQS")"

if [ -f "$VENV/pyvenv.cfg" ] && [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] \
    && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

echo "make-test-venv: creating $VENV" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQS"
"$VENV/bin/python" -c 'import flask, django  # noqa: F401  (both import)
from importlib.metadata import version
print("make-test-venv: Flask", version("flask"), "Django", version("django"))' >&2
printf '%s' "$want" > "$STAMP"
