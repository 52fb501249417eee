#!/usr/bin/env bash
# Runs the whole test suite: unit tests, black-box API tests (the real binary, a real
# WebSocket, a fake streaming LLM), and the tests that need the embedding model.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! scripts/fetch-model.sh data/models/all-MiniLM-L6-v2; then
  echo "warning: could not fetch the embedding model; model tests will say they skip" >&2
fi
cargo test --all-targets --no-fail-fast -- --test-threads=4
