#!/usr/bin/env bash
# Makes the two small virtualenvs the example configs name, venvs/shop (shopkit 2.0) and
# venvs/legacy (shopkit 1.4), beside this script, with the Python the gateway embeds:
#
#     examples/make-venvs.sh [PYTHON]
#
# PYTHON defaults to $PYO3_PYTHON, else the first python3 on PATH (what a build takes). A venv
# must be made by the same Python version as the gateway embeds (`check` refuses any other),
# so they are made here rather than shipped. Real ones come from
# `python3 -m venv DIR && DIR/bin/pip install ...`; these get one small package, copied from
# packages/, without pip. Does nothing when both exist and were made by PYTHON.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${1:-${PYO3_PYTHON:-$(command -v python3 || true)}}"
if [ -z "$PYTHON" ] || ! "$PYTHON" -c '' 2>/dev/null; then
    echo "make-venvs: no Python ('$PYTHON'): give one as the argument" >&2
    exit 1
fi
want="$("$PYTHON" -c 'import sys; print(sys.version); print(sys.base_prefix)')"
site="lib/$("$PYTHON" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')/site-packages"

for spec in shop:shopkit-2.0 legacy:shopkit-1.4; do
    name="${spec%%:*}"
    package="${spec#*:}"
    venv="venvs/$name"
    if [ -f "$venv/.made-by" ] && [ "$(cat "$venv/.made-by")" = "$want" ]; then
        continue
    fi
    rm -rf "$venv"
    "$PYTHON" -m venv --without-pip "$venv"
    cp -r "packages/$package/." "$venv/$site/"
    printf '%s\n' "$want" > "$venv/.made-by"
    echo "make-venvs: made examples/$venv with $PYTHON" >&2
done
