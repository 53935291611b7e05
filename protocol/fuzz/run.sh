#!/usr/bin/env bash
# Fuzzes the protocol crate: runs each cargo-fuzz (libFuzzer) target for SECONDS (default 20)
# and exits non-zero if any of them crashes. A crashing input is kept in
# protocol/fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> <file>
#
# Works on the stable toolchain: cargo fuzz passes unstable -Z flags to rustc, which
# RUSTC_BOOTSTRAP=1 lets a stable compiler accept. Installs cargo-fuzz if it is missing.
# Environment: FUZZ_SANITIZER (default none: the crate has no unsafe code; "address" works too,
# at about half the speed), FUZZ_MAX_LEN (default 65536), CARGO_BUILD_JOBS (default 1).
set -euo pipefail

secs=${1:-20}
case $secs in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-none}
max_len=${FUZZ_MAX_LEN:-65536}
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

# Seeds: the captured web-server connections, behind the knob byte 0 (default settings).
vectors=../tests/vectors
mkdir -p corpus/fastcgi_connection corpus/scgi_request corpus/uwsgi_request corpus/fastcgi_params
for f in "$vectors"/*.bin; do
    name=$(basename "$f" .bin)
    case $name in
    *-fcgi-*) dir=corpus/fastcgi_connection ;;
    *-scgi-*) dir=corpus/scgi_request ;;
    *-uwsgi-*) dir=corpus/uwsgi_request ;;
    *) continue ;;
    esac
    [ -e "$dir/seed-$name" ] || { printf '\0'; cat "$f"; } >"$dir/seed-$name"
done
# Params blocks: short lengths, and a 4-byte value length.
printf '\0\016\003REQUEST_METHODGET\013\000SCRIPT_NAME' >corpus/fastcgi_params/seed-short
printf '\0\001\200\000\000\002Xab' >corpus/fastcgi_params/seed-long

cargo fuzz build -s "$sanitizer"

failed=()
for target in $(cargo fuzz list); do
    echo "=== $target: ${secs}s" >&2
    if ! cargo fuzz run -s "$sanitizer" "$target" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]} (inputs in $(pwd)/artifacts/)" >&2
    exit 1
fi
echo "fuzzing: no crash in $(cargo fuzz list | wc -l) targets, ${secs}s each" >&2
