#!/usr/bin/env bash
# make demo: a broker, a worker and simulated traffic with a latency incident; shows the alerts arriving
# and a sample of /metrics, then stops everything it started (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

DEMO_DIR="$PWD/.demo"
BROKER_PORT="${DEMO_BROKER_PORT:-19092}"
WEB_PORT="${DEMO_WEB_PORT:-16066}"
RATE="${DEMO_RATE:-40}"
DURATION="${DEMO_DURATION:-120}"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT"
export LLMPULSE_WEB_PORT="$WEB_PORT" LLMPULSE_API_TOKEN="demo-token" LLMPULSE_DATA_DIR="$DEMO_DIR/worker"
export LLMPULSE_ALERTS__RESOLVE_HOLD_S=20
# The simulated fleet spends about $300 an hour at 40 calls/s: under the seeds' $10/hour global budget that would
# page a budget incident too, which is real but not what this demo shows. Budgets here fit the simulated fleet.
export LLMPULSE_BUDGETS__GLOBAL_HOUR_USD=1000 LLMPULSE_BUDGETS__GLOBAL_DAY_USD=10000
# Real prompts (the traces the simulator is fitted to) average 1-12k tokens, over seed 004's 500-token average
# limit on every series: that is informational (INFO, P3, never paging), so the tail below shows WARNING and
# worse, and /api/alerts lists the INFO ones last.

rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"
started=$(date +%s)
pids=()
cleanup() {
    echo
    echo "== stopping what the demo started"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    llmpulse broker stop --port "$BROKER_PORT" --data-dir "$DEMO_DIR/broker" >/dev/null 2>&1 || true
    echo "demo finished in $(( $(date +%s) - started )) s"
}
trap cleanup EXIT

echo "== 1/5 Kafka broker on 127.0.0.1:$BROKER_PORT"
llmpulse broker start --port "$BROKER_PORT" --data-dir "$DEMO_DIR/broker"

echo "== 2/5 worker (http://127.0.0.1:$WEB_PORT), log in $DEMO_DIR/worker.log"
llmpulse worker --loglevel warning > "$DEMO_DIR/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$WEB_PORT/health/ready" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fs "http://127.0.0.1:$WEB_PORT/health/ready" >/dev/null || { tail -30 "$DEMO_DIR/worker.log"; exit 1; }

echo "== 3/5 following the alerts topic"
llmpulse alerts tail --severity WARNING --timeout $((DURATION + 40)) > "$DEMO_DIR/alerts.log" 2>&1 &
pids+=($!)
tail -n +1 -f "$DEMO_DIR/alerts.log" &
pids+=($!)

echo "== 4/5 simulated traffic: $RATE calls/s for ${DURATION}s, a latency spike from 10 s to 40 s"
llmpulse simulate --rate "$RATE" --duration "$DURATION" --scenario latency-spike \
    --scenario-start 10 --scenario-duration 30
sleep 6

echo
echo "== 5/5 what the worker shows"
echo "-- GET /api/incidents: what paged on-call (one incident per likely cause, its member alerts under it)"
curl -fs "http://127.0.0.1:$WEB_PORT/api/incidents" | python -c '
import json, sys
incidents = json.load(sys.stdin)["incidents"]
for i in incidents:
    print("%-8s %s %-12s %-8s %s" % (i["severity"], i["priority"], i["status"], i["scope"], i["summary"]))
    for m in i["members"]:
        print("    %-8s %-10s %-14s %s" % (m["severity"], m["status"], m["rule"], m["summary"]))
print("%d incident(s), %d paging" % (len(incidents), sum(i["priority"] != "P3" for i in incidents)))'
echo "-- GET /api/alerts: every member alert"
curl -fs "http://127.0.0.1:$WEB_PORT/api/alerts" | python -c '
import json, sys
alerts = json.load(sys.stdin)["alerts"]
print("%d member alert(s), %d of them INFO (P3: recorded, never paged)" % (len(alerts), sum(a["priority"] == "P3" for a in alerts)))'
echo "-- GET /metrics (sample)"
curl -fs "http://127.0.0.1:$WEB_PORT/metrics" | grep -E '^llmpulse_(llm_latency_seconds\{.*window="1m"|llm_requests_total|alerts_emitted_total|incidents_emitted_total|llm_cost_usd_total|events_processed_total)' | head -25 || true
