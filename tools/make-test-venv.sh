#!/usr/bin/env bash
# Makes the test venv, target/test-venv (or $WSGI_GATEWAY_TEST_VENV), with the packages pinned
# in tools/test-requirements.txt (Flask, Django), from the Python the gateway is built against:
# $WSGI_GATEWAY_TEST_PYTHON, else $PYO3_PYTHON, else the first python3 on PATH.
# Idempotent: when the venv exists and was made from the same requirements, it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${WSGI_GATEWAY_TEST_PYTHON:-${PYO3_PYTHON:-$(command -v python3 || true)}}"
VENV="${WSGI_GATEWAY_TEST_VENV:-target/test-venv}"
REQS=tools/test-requirements.txt
STAMP="$VENV/.test-venv-stamp"

if [ -z "$PYTHON" ] || ! "$PYTHON" -c '' 2>/dev/null; then
    echo "make-test-venv: no Python to make the venv with ('$PYTHON'; set WSGI_GATEWAY_TEST_PYTHON)" >&2
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
