#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -j2 -- -D warnings
cargo nextest run --workspace -j2 --no-fail-fast
