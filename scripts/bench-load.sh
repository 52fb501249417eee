#!/usr/bin/env bash
# Issue 16's load runs, each on a fresh node: the fake model (300 ms to the first token, 200
# tokens at 40/s), one `companion serve` pointed at it, and `companion bench load` or
# `companion bench idle` against the node, with its process id for CPU time and RSS.
#
#   scripts/bench-load.sh load  [learners] [seconds] [bm25|hybrid] [sqlite|postgres URL]
#   scripts/bench-load.sh idle  [connections]
#   scripts/bench-load.sh two   [learners] [seconds]   # two nodes on one PostgreSQL
#
# Build first (release for figures worth comparing): cargo build --release; set BIN to the
# binary (default target/release/companion). SERVE_BIN, when set, is the binary the nodes run
# (an A/B of two builds of the service under the same fake model and load generator).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/companion}"
SERVE_BIN="${SERVE_BIN:-$BIN}"
what="${1:-load}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export COMPANION__AUTH__SECRET="bench-secret-0123456789abcdef0123456789abcdef"
export COMPANION__DEMO__ENABLED=false
export COMPANION__LLM__BASE_URL="http://127.0.0.1:9100/v1"
export COMPANION__LLM__API_KEY="bench"
export COMPANION__LLM__CONTEXT_WINDOW=16000
# Every simulated learner asks from loopback: lift the per-address and per-node caps, and the
# per-learner quotas a real learner would meet (questions per minute, tokens per day).
export COMPANION__SOCKETS__MAX_CONNECTIONS=100000
export COMPANION__SOCKETS__MAX_CONNECTIONS_PER_ADDRESS=100000
export COMPANION__LIMITS__ASKS_PER_MINUTE=1000
export COMPANION__QUOTAS__TOKENS_PER_DAY=100000000
ulimit -n "$(ulimit -Hn)"

"$BIN" bench fake-llm --listen 127.0.0.1:9100 > "$work/fake.log" 2>&1 &
pids+=($!)

node() { # node NAME PORT [extra env...]
  local name=$1 port=$2; shift 2
  mkdir -p "$work/$name"
  env "$@" "$SERVE_BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" > "$work/$name.log" 2>&1 &
  pids+=($!)
  echo $! > "$work/$name.pid"
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && return 0
    sleep 0.5
  done
  echo "node $name never became ready; its log:" >&2; tail -20 "$work/$name.log" >&2; exit 1
}

# The mean of each stage of a turn, from the node's /metrics (sum / count).
stage_means() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk '
    /^companion_turn_stage_seconds_sum/ { split($0, a, "\""); sum[a[2]] = $NF }
    /^companion_turn_stage_seconds_count/ { split($0, a, "\""); n[a[2]] = $NF }
    END { for (s in n) if (n[s] > 0) printf "stage %-15s mean %8.3f ms over %d turns\n", s, 1000 * sum[s] / n[s], n[s] }' | sort
}

case "$what" in
  load)
    learners="${2:-1000}"; seconds="${3:-60}"; mode="${4:-bm25}"; db="${5:-sqlite}"
    extra=("COMPANION__RETRIEVAL__MODE=$mode")
    [ "$mode" = bm25 ] && extra+=("COMPANION__EMBEDDING__PROVIDER=none")
    [ "$mode" != bm25 ] && extra+=("COMPANION__EMBEDDING__MODEL_DIR=$PWD/data/models/all-MiniLM-L6-v2")
    [ "$db" != sqlite ] && extra+=("COMPANION__DATABASE__URL=$db")
    node a 8181 "${extra[@]}"
    "$BIN" bench load --server http://127.0.0.1:8181 --server-pid "$(cat "$work/a.pid")" \
      --learners "$learners" --duration-secs "$seconds" --sources 127.0.0.1-40
    stage_means 8181
    ;;
  idle)
    connections="${2:-20000}"
    node a 8181 COMPANION__EMBEDDING__PROVIDER=none COMPANION__RETRIEVAL__MODE=bm25
    "$BIN" bench idle --server http://127.0.0.1:8181 --server-pid "$(cat "$work/a.pid")" \
      --connections "$connections" --sources 127.0.0.1-40
    ;;
  two)
    learners="${2:-1000}"; seconds="${3:-60}"
    db="${COMPANION_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
    common=(COMPANION__EMBEDDING__PROVIDER=none COMPANION__RETRIEVAL__MODE=bm25 "COMPANION__DATABASE__URL=$db")
    node a 8181 "${common[@]}" COMPANION__TRANSCRIPTS__NODE_ID=bench-a
    node b 8182 "${common[@]}" COMPANION__TRANSCRIPTS__NODE_ID=bench-b
    "$BIN" bench load --server http://127.0.0.1:8181 --server http://127.0.0.1:8182 \
      --server-pid "$(cat "$work/a.pid")" --server-pid "$(cat "$work/b.pid")" \
      --learners "$learners" --duration-secs "$seconds" --sources 127.0.0.1-40
    ;;
  *) echo "usage: $0 load|idle|two ..." >&2; exit 2 ;;
esac
