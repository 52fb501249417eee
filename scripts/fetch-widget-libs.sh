#!/usr/bin/env bash
# Fetches the chat widget's rendering libraries (markdown-it, DOMPurify, highlight.js, KaTeX),
# at the versions pinned in web/widget-libs/package-lock.json, from the npm registry, and
# bundles them into web/widget-libs/dist/libs.js, which the binary reads at start-up and serves
# at /widget/libs.js (`server.widget_libs_dir`). Without that file the widget still works and
# shows answers as plain text (with citation links); the server says so in its log.
# Usage: scripts/fetch-widget-libs.sh     (run by scripts/run.sh and scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/../web/widget-libs"
if [[ -s dist/libs.js && dist/libs.js -nt package-lock.json && dist/libs.js -nt bundle.mjs ]]; then
  echo "fetch-widget-libs: dist/libs.js is up to date; nothing to do"
  exit 0
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "fetch-widget-libs: $tool is required" >&2; exit 1; }
done
# Exactly the locked versions, no install scripts run.
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
node bundle.mjs
