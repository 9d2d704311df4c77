#!/usr/bin/env bash
# make bench / make bench-quick: the benchmark suite, with a local Kafka broker started for it when none answers
# at KAFKA_BOOTSTRAP_SERVERS (stopped again at the end, also on Ctrl-C or failure). Arguments go to bench.run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

BENCH_DIR="$PWD/.bench"
BROKER_PORT="${BENCH_BROKER_PORT:-19093}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
started_broker=""
cleanup() {
    if [[ -n "$started_broker" ]]; then
        echo "== stopping the broker the benchmarks started (and deleting its topics: ~2 GB of benchmark data)"
        llmpulse broker stop --port "$BROKER_PORT" --data-dir "$BENCH_DIR/broker" >/dev/null 2>&1 || true
        rm -rf "$BENCH_DIR/broker" || true
    fi
}
trap cleanup EXIT

if ! python -c "import sys; from bench.dataset import broker_up; sys.exit(0 if broker_up('$KAFKA_BOOTSTRAP_SERVERS') else 1)"
then
    echo "== no Kafka broker at $KAFKA_BOOTSTRAP_SERVERS: starting one on 127.0.0.1:$BROKER_PORT"
    rm -rf "$BENCH_DIR/broker" && mkdir -p "$BENCH_DIR"
    llmpulse broker start --port "$BROKER_PORT" --data-dir "$BENCH_DIR/broker"
    started_broker=1
    export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT"
fi
python -m bench.run "$@"
