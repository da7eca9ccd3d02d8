#!/usr/bin/env bash
# The test suite: fetch the offline assets the parity and end-to-end tests read, then run every
# crate's tests in release mode (numerical tests are slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kd/target}"
scripts/fetch-assets.sh assets
# kd-cache checks its Parquet shards with pyarrow and skips that test without it: install it.
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import pyarrow" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check pyarrow \
    || echo "warning: cannot install pyarrow; the pyarrow check of kd-cache will be skipped" >&2
fi
cargo test --release --workspace
