#!/usr/bin/env bash
# The test suite: fetch the offline assets the parity and end-to-end tests read, then run every
# crate's tests in release mode (numerical tests are slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds where `cargo run` does (./target, or $CARGO_TARGET_DIR when set), so the README's two
# commands share one build.
scripts/fetch-assets.sh assets
# kd-cache checks its Parquet shards with pyarrow (that test fails without it): install it.
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import pyarrow" 2>/dev/null; then
  if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check pyarrow \
    || ! "$PYTHON" -c "import pyarrow"; then
    echo "error: cannot install pyarrow, which the Parquet check of kd-cache needs" \
      "(set KD_SKIP_PYARROW=1 to run the suite without that check)" >&2
    exit 1
  fi
fi
cargo test --release --workspace
