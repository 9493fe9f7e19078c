#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the loopback demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "building sotto (release; the first build takes a few minutes)..." >&2
cargo build --release --locked -q -p sotto-bench
exec ./target/release/sotto-bench demo "$@"
