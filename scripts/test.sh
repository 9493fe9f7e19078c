#!/usr/bin/env bash
# The whole test suite, exactly what CI runs: formatting, lints, fuzz targets build, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
[ -f ../shared/vectors/rfc9605-sframe.json ] || {
  echo "test: ../shared/vectors/rfc9605-sframe.json is missing (the RFC 9605 test vectors)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked -p sotto-fuzz --all-targets -- -D warnings
cargo test --locked
