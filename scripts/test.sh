#!/usr/bin/env bash
# The project's test command: unit, property and integration tests, then a short fuzz run.
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# Property tests do heavy (de)compression; release mode keeps them quick.
cargo test --workspace --release

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    scripts/fuzz.sh "$FUZZ_SECONDS"
fi
