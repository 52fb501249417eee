#!/usr/bin/env bash
# Runs the whole test suite: unit tests, black-box API tests (the real binary, a real
# WebSocket, a fake streaming LLM), and the tests that need the embedding model.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! scripts/fetch-model.sh data/models/all-MiniLM-L6-v2; then
  echo "warning: could not fetch the embedding model; model tests will say they skip" >&2
fi
if ! scripts/fetch-e5.sh data/models/multilingual-e5-small; then
  echo "warning: could not fetch the multilingual model; its tests will say they skip" >&2
fi
# Assessment windows name IANA time zones (Europe/Paris), read from the system's tz database.
if [ ! -d /usr/share/zoneinfo ] && command -v apt-get >/dev/null; then
  apt-get install -y tzdata >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y tzdata >/dev/null; } \
    || echo "warning: could not install tzdata; the assessment window test will fail" >&2
fi
# The mentor page is tested in headless Chromium driven by Playwright (tests/browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  apt-get install -y chromium >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; } \
    || echo "warning: could not install chromium" >&2
fi
if command -v npm >/dev/null; then
  (cd tests/browser && npm ci --no-audit --no-fund) || echo "warning: npm ci failed in tests/browser" >&2
fi
# The widget's rendering libraries (markdown-it, DOMPurify, highlight.js, KaTeX), pinned.
scripts/fetch-widget-libs.sh || echo "warning: no widget libraries; the widget browser test will fail" >&2
if [ -x /usr/bin/chromium ] && [ -d tests/browser/node_modules/playwright-core ]; then
  export COMPANION_REQUIRE_BROWSER=1
else
  echo "warning: no Chromium or Playwright; the browser test will say it skips" >&2
fi
# The Qdrant server backend, a three-peer cluster and two nodes on one index are tested on the
# server binary beside the checkout; the tests start it on free loopback ports.
qdrant="${COMPANION_TEST_QDRANT_BIN:-../shared/bin/qdrant}"
if [ -x "$qdrant" ]; then
  echo "Qdrant server for the server, cluster and two-node tests: $qdrant"
else
  echo "warning: no Qdrant server at $qdrant; the server, cluster and two-node tests will say they skip" >&2
fi
cargo test --all-targets --no-fail-fast -- --test-threads=4
