#!/usr/bin/env bash
# The test suite: fetch the offline assets the parity and end-to-end tests read, then run every
# crate's tests in release mode (numerical tests are slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kd/target}"
scripts/fetch-assets.sh assets
cargo test --release --workspace
