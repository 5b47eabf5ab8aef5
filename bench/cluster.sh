#!/usr/bin/env bash
# bench/cluster.sh — issue 8: calls per second across cluster nodes vs through one node, same run.
#
#   bench/cluster.sh [OUTDIR]     (default bench/results/<UTC date>/cluster)
#
# Three sipshard nodes on 127.0.0.2, 127.0.0.3, 127.0.0.4 ([cluster] enabled, --threads 1 each:
# three nodes share this machine's cores), their bindings in one redis-server on 127.0.0.1
# (direct mode, no persistence). A `sipshard-load uas` on 127.0.0.5 answers the calls; its users
# register through node 1 (UDP, Contact the UAS). Then, alternating, for each target node:
#   single: calls through node 1, which wrote the bindings (its cache holds them);
#   cross:  calls through node 2, which reads them from Redis (then its cache, kept coherent by
#           publish/subscribe) and forwards to the UAS itself: a UDP client is reached from any
#           node (README, Cluster), so the "extra hop" of a UDP callee is the lookup, not a node.
# Each: `sipshard-load call --search` (highest rate with no failure, timeout or retransmission
# and >= 97 % achieved) and the CPU of every sipshard node and redis-server per 1,000 calls at
# 90 % of it (flood protection off: the UAS alone sends thousands of packets a second). Uses target/release/{sipshard,sipshard-load} as they are (copied first).
# Everything on 127.0.0.0/8; every process is stopped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench/results/$(date -u +%F)/cluster}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/sipshard-cluster-bench.XXXXXX)
SIP_PORT=${SIP_PORT:-25090}
REDIS_PORT=${REDIS_PORT:-26490}
UAS=127.0.0.5:${UAS_PORT:-25095}
DUR=${DUR:-5}
MAX_RATE=${MAX_RATE:-8000}
USERS=${USERS:-2000}
PIDS=()

cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
	sleep 0.5
	for pid in "${PIDS[@]}"; do kill -9 "$pid" 2> /dev/null || true; done
}
trap cleanup EXIT
log() { printf '%s %s\n' "$(date -u +%T)" "$*" | tee -a "$OUT/run.log"; }

cp "$ROOT/target/release/sipshard" "$ROOT/target/release/sipshard-load" "$WORK/"
log "commit $(git -C "$ROOT" rev-parse --short HEAD); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
	--dir "$WORK" > "$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
sleep 0.5

NODES=(127.0.0.2 127.0.0.3 127.0.0.4)
NODE_PIDS=()
for ip in "${NODES[@]}"; do
	"$WORK/sipshard" --threads 1 \
		--set "global/transports=sip:$ip:$SIP_PORT;transport=udp" \
		--set global/log-level=warning --set global/admin-listen= \
		--set "module::Registrar/reg-domains=example.org" \
		--set module::Registrar/db-implementation=redis \
		--set module::Registrar/redis-server-domain=127.0.0.1 \
		--set "module::Registrar/redis-server-port=$REDIS_PORT" \
		--set module::Registrar/max-aors-per-shard=1048576 \
		--set cluster/enabled=true --set "cluster/nodes=${NODES[*]}" \
		--set module::DoSProtection/enabled=false \
		> "$WORK/node-$ip.out" 2> "$WORK/node-$ip.log" &
	PIDS+=($!)
	NODE_PIDS+=($!)
done
for ip in "${NODES[@]}"; do
	for _ in $(seq 50); do grep -q "listening on" "$WORK/node-$ip.out" && break; sleep 0.1; done
	grep -q "listening on" "$WORK/node-$ip.out" || { log "node $ip did not start"; cat "$WORK/node-$ip.log"; exit 1; }
done
"$WORK/sipshard-load" uas --listen "$UAS" > "$WORK/uas.out" 2> "$WORK/uas.log" &
PIDS+=($!)
sleep 0.3

log "registering $USERS users through node 1 at the UAS $UAS"
"$WORK/sipshard-load" register --target "127.0.0.2:$SIP_PORT" --domain example.org \
	--rate 1000 --count "$USERS" --user-count "$USERS" --contact "$UAS" --expires 3600 \
	--json "$OUT/register.json" > "$WORK/register.txt" 2>&1
grep -E "^ *sent" "$WORK/register.txt" | tee -a "$OUT/run.log"

# CPU ticks (utime + stime) of the given pids, summed.
ticks() { for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | awk '{ s += $1 } END { print s }'; }
HZ=$(getconf CLK_TCK)

run() { # run LABEL NODE_IP
	local label=$1 ip=$2
	"$WORK/sipshard-load" call --target "$ip:$SIP_PORT" --domain example.org --user-count "$USERS" \
		--rate "$MAX_RATE" --duration "$DUR" --search --json "$OUT/search-$label.json" \
		> "$WORK/search-$label.txt" 2>&1 || true
	local best
	best=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["search"]["best"]))' \
		"$OUT/search-$label.json" 2> /dev/null || echo 0)
	local rate=$((best * 9 / 10))
	sleep 2
	local before after
	before=$(ticks "${NODE_PIDS[@]}" "$REDIS_PID")
	"$WORK/sipshard-load" call --target "$ip:$SIP_PORT" --domain example.org --user-count "$USERS" \
		--rate "$rate" --duration "$DUR" --json "$OUT/at90-$label.json" > "$WORK/at90-$label.txt" 2>&1 || true
	after=$(ticks "${NODE_PIDS[@]}" "$REDIS_PID")
	python3 - "$label" "$best" "$rate" "$OUT/at90-$label.json" "$((after - before))" "$HZ" << 'PY' | tee -a "$OUT/summary.txt"
import json, sys
label, best, rate, path, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
d = json.load(open(path))
c = d["counts"]
lat = d["latency_ms"]["corrected"]
calls = c["ok"]
cpu_ms = ticks * 1000 / hz
print(f"{label}: highest clean {best} calls/s; at {rate}/s: ok={c['ok']} failed={c['failed']} "
      f"timed_out={c['timed_out']} retrans={c['retransmissions']} p50={lat['p50_ms']:.2f} ms "
      f"p99={lat['p99_ms']:.2f} ms; servers' CPU {cpu_ms:.0f} ms = {cpu_ms * 1000 / max(calls, 1):.1f} ms per 1,000 calls")
PY
}

for round in 1 2; do
	log "round $round: single (node 1)"
	run "single-$round" 127.0.0.2
	sleep 2
	log "round $round: cross (node 2)"
	run "cross-$round" 127.0.0.3
	sleep 2
done
log "load $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"
