#!/usr/bin/env bash
# The project's test command: unit, property and integration tests, then a short fuzz run.
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# Property tests do heavy (de)compression: optimized, but without LTO (profile ci-test).
cargo test --workspace --profile ci-test

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    scripts/fuzz.sh "$FUZZ_SECONDS"
fi
