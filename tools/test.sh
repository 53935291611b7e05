#!/usr/bin/env bash
# Runs every test of the project on one Python, then a smoke subset built against other
# Pythons, then the pip install test. This is what CI runs. Installs what the tests need when it
# is missing: nginx, lighttpd, apache2 and Debian's python3 with its libpython and venv (apt), a
# venv with Flask and Django per Python (pip), cargo-nextest and cargo-fuzz.
#
# Variables (all optional):
#   PYO3_PYTHON       the Python of the whole suite: the gateway is built against it and the
#                     test venv is made from it. Default: the first python3 on PATH.
#   SMOKE_PYTHONS     space-separated Pythons to run the smoke subset on, each built in a
#                     target dir of its own (target/smoke-VERSION-HASH). Default: the oldest
#                     and the newest CPython 3.9+ with a shared libpython under
#                     $(pyenv root)/versions, and Debian's /usr/bin/python3; those that are the
#                     suite's Python are left out. Empty (SMOKE_PYTHONS=): no smoke runs.
#   SMOKE_FILTER      the nextest filterset of the smoke subset (default below: PEP 3333 over
#                     FastCGI and SCGI, application groups in sub-interpreters, mount venvs,
#                     the preflight checks, nginx in front with FastCGI, SCGI and Flask).
#   PIP_PYTHONS       Pythons for which the pip install test (tests/install.rs) makes a venv,
#                     `pip install`s this checkout into it and serves Flask behind nginx; slow
#                     (a release build each). Default: the suite's Python and the first smoke
#                     Python. Empty (PIP_PYTHONS=): skipped.
#   FUZZ_SECONDS      seconds of fuzzing per protocol decoder (default 10).
#   CARGO_BUILD_JOBS  cargo's parallel jobs (default 2).
#   CI                when set (CI=true), a missing prerequisite fails a test instead of
#                     skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

DEFAULT_SMOKE_FILTER='binary(wsgi-gateway) | binary(preflight) | binary(own_gil)
  | (binary(wsgi) & test(/^(environ_is_pep3333|https_scheme_and_latin1_native_strings|write_callable_exc_info_and_content_length|input_stream_methods|responses_are_streamed|app_errors_give_500_or_a_cut_off_response_and_the_process_keeps_serving|close_is_called_also_when_the_client_goes_away|keep_conn_and_multiplexed_requests|file_wrapper_streams_a_real_file|the_request_subcommand_speaks_both_protocols|an_error_is_logged_and_answered_when_traceback_cannot_be_imported)$/))
  | (binary(groups) & test(/^(module_state_is_shared_within_a_group_and_isolated_between_groups|replaced_sub_interpreters_are_ended|an_extension_refusing_sub_interpreters_gets_a_hint_naming_its_group|a_daemon_thread_in_a_sub_interpreter_does_not_break_the_graceful_stop|apps_sharing_the_python_home_venv_each_in_their_own_sub_interpreter|nginx_mount_venvs_with_conflicting_versions_side_by_side|scripts_that_activate_their_own_venv_keep_working|the_gateway_loads_no_module_an_app_did_not_import)$/))
  | (binary(frontends) & test(/^(nginx_fastcgi_root_and_submount|nginx_scgi_root_and_submount|flask_behind_nginx_fastcgi)$/))'
SMOKE_FILTER="${SMOKE_FILTER:-$DEFAULT_SMOKE_FILTER}"

# A Python the gateway can embed: CPython 3.9+, a shared libpython to link, not free-threaded.
embeddable() {
    "$1" -c '
import os, sys, sysconfig
v = sysconfig.get_config_var
lib = os.path.join(v("LIBDIR") or "", v("LDLIBRARY") or "")
ok = (sys.implementation.name == "cpython" and sys.version_info >= (3, 9)
      and v("Py_ENABLE_SHARED") and not v("Py_GIL_DISABLED") and os.path.exists(lib))
sys.exit(0 if ok else 1)' 2>/dev/null
}

realpy() {
    "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'
}

PY="${PYO3_PYTHON:-$(command -v python3 || true)}"
if [ -z "$PY" ] || ! embeddable "$PY"; then
    echo "test.sh: '$PY' cannot be embedded (CPython 3.9+ with a shared libpython): set PYO3_PYTHON" >&2
    exit 1
fi
PY_REAL="$(realpy "$PY")"
# PYO3_PYTHON is left as it is: unset, the build takes the first python3 on PATH, i.e. $PY.

# The oldest and the newest embeddable pyenv Pythons, and Debian's.
default_smoke_pythons() {
    local root versions=()
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for py in "$root"/versions/3.*/bin/python3; do
        [ -x "$py" ] && embeddable "$py" || continue
        versions+=("$("$py" -c 'import sys; print("%d %d %d" % sys.version_info[:3])') $py")
    done
    if [ "${#versions[@]}" -gt 0 ]; then
        printf '%s\n' "${versions[@]}" | sort -n -k1,1 -k2,2 -k3,3 | sed -n '1p;$p' | cut -d' ' -f4-
    fi
    [ -x /usr/bin/python3 ] && echo /usr/bin/python3
    return 0
}

if [ -z "${SMOKE_PYTHONS+set}" ]; then
    SMOKE_PYTHONS="$(default_smoke_pythons | tr '\n' ' ')"
fi
smoke=()
for py in $SMOKE_PYTHONS; do
    real="$(realpy "$py" 2>/dev/null || true)"
    if [ "$real" = "$PY_REAL" ] || printf '%s\n' "${smoke[@]}" | grep -qxF "$py"; then
        continue
    fi
    smoke+=("$py")
done

if [ -z "${PIP_PYTHONS+set}" ]; then
    PIP_PYTHONS="$PY ${smoke[0]:-}"
fi

tools/install-test-deps.sh
WSGI_GATEWAY_TEST_PYTHON="$PY" tools/make-test-venv.sh
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest

echo "test.sh: the whole suite on $PY ($PY_REAL); smoke on: ${smoke[*]:-none}; pip install on: ${PIP_PYTHONS:-none}" >&2

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --doc
# A short bounded fuzz run of every protocol decoder (installs cargo-fuzz when missing); its
# libFuzzer output goes to target/fuzz.log, a summary line here.
protocol/fuzz/run.sh "${FUZZ_SECONDS:-10}" > target/fuzz.log 2>&1 || { tail -50 target/fuzz.log; exit 1; }
tail -1 target/fuzz.log
cargo nextest run --workspace --no-fail-fast

# The smoke subset against each other Python, built in a target dir of its own with a test
# venv of its own.
for py in "${smoke[@]}"; do
    if ! embeddable "$py"; then
        echo "test.sh: $py cannot be embedded (CPython 3.9+ with a shared libpython)" >&2
        exit 1
    fi
    version="$("$py" -c 'import platform; print(platform.python_version())')"
    dir="target/smoke-$version-$(realpy "$py" | cksum | cut -d' ' -f1)"
    echo "test.sh: smoke subset on $py (Python $version) in $dir" >&2
    WSGI_GATEWAY_TEST_PYTHON="$py" WSGI_GATEWAY_TEST_VENV="$dir/test-venv" tools/make-test-venv.sh
    PYO3_PYTHON="$py" CARGO_TARGET_DIR="$dir" WSGI_GATEWAY_TEST_VENV="$dir/test-venv" \
        cargo nextest run -p wsgi-gateway --bins --test wsgi --test groups --test preflight --test own_gil \
        --test frontends --no-fail-fast -E "$SMOKE_FILTER"
done

# pip install of this checkout into fresh venvs, then Flask behind nginx (slow: run once).
if [ -n "${PIP_PYTHONS// /}" ]; then
    WSGI_GATEWAY_PIP_PYTHONS="$PIP_PYTHONS" cargo nextest run --test install --run-ignored only -E 'test(/^pip_install/)'
fi

# `cargo install --path .`, as README documents it, into a scratch root: the installed binary
# names the Python it embeds and checks a configuration (its libpython loads, Python starts).
cargo install --locked --quiet --path . --root target/cargo-install --target-dir target
target/cargo-install/bin/wsgi-gateway --version
target/cargo-install/bin/wsgi-gateway check --listen 127.0.0.1:0 tests/apps/pep3333.wsgi
