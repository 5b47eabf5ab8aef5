#!/usr/bin/env bash
# bench/run.sh — sipshard vs Kamailio 5.6 on this machine, 127.0.0.1 (and 127.0.0.2-4) only.
#
#   bench/run.sh [OUTDIR]         the report: phases 9-12 (below), about 25 minutes on 2 CPUs;
#                                 results in OUTDIR (default bench/results/<UTC date>), then
#                                 bench/report.py writes BENCHMARKS.md and bench/plots/
#   PHASES="2 3" bench/run.sh DIR only some phases (the earlier SIPp-driven investigations 0-7,
#                                 TLS/WSS 8: bench/NOTES.md); results in DIR only, unless
#                                 REPORT_TO=ROOT asks for ROOT/BENCHMARKS.md from what ran
#
# Builds nothing: uses target/release/sipshard and sipshard-load as they are (or the ones in
# $SIPSHARD_BIN_DIR; copied to a scratch directory first, so that a concurrent build cannot swap
# them mid-run): `cargo build --release --locked` first.
# Needs: kamailio with its redis, tls and websocket modules (Debian 12: kamailio 5.6.3,
# kamailio-redis-modules, kamailio-tls-modules, kamailio-websocket-modules), redis-server,
# redis-sentinel, curl, openssl, python3; phases 0-7 also sip-tester (sipp 3.6.1), sysstat
# (pidstat), tcpdump.
#
# The report's phases (9-12) are described where they are defined, below phase 8.
# Everything listens and sends on 127.0.0.1; every process is started under `timeout`, SIPp
# runs are stopped DURATION + 6 s after they start (an overloaded step fails), and
# everything is stopped at the end.
#
# Phases:
#   0. SIPp's own ceiling: register.xml against a SIPp responder (register_responder.xml).
#   1. Kamailio (bench/kamailio.cfg, 2 UDP workers, :5070, TLSF allocator) and sipshard
#      --threads 2 (:25060), both running throughout. For each: the highest REGISTER/s with
#      0 failed calls, 0 retransmissions and >= 95 % of the target rate achieved (doubling,
#      then bisection; a failed step is retried once). At 90 % of it: 2 CPU runs per server,
#      interleaved (server CPU time from /proc/PID/task/*/schedstat before and after, pidstat
#      alongside), and 1 latency run per server with a tcpdump capture of ~1 s (server-side
#      latency from kernel timestamps: REGISTER in -> 200 out).
#      The same search and 90 % runs for sipshard --threads 1 (:25061).
#   1b. The same search with two SIPp clients whose source ports the kernel's SO_REUSEPORT
#      hash sends to different sipshard shards (found by probing with OPTIONS).
#   2. Calls (INVITE/180/200/ACK/1 s hold/BYE/200 through the proxy to a SIPp UAS that
#      registered from its own port; fresh ports and callees per step, see call_step):
#      search, CPU at 90 %, latency (every relayed message, in -> out; and INVITE in -> 200
#      out, which includes the UAS).
#   3. Cross-shard hop: REGISTER CPU per 1,000 at $HOP_RATE/s, --threads 1 vs --threads 2.
#   7. The load generators: SIPp's and sipshard-load's highest clean REGISTER rate against the
#      same `sipshard-load responder` (:25071); then both against Kamailio at LOADGEN_RATE
#      (SIPp with a tcpdump capture for the server-side latency, sipshard-load with its own
#      percentiles).
#   6. REGISTER with the bindings in Redis (one redis-server on 127.0.0.1:$REDIS_PORT, no
#      persistence, emptied before each server's runs): Kamailio with bench/kamailio-redis.cfg
#      (db_redis, usrloc write-through, :5071) vs sipshard --threads 2 with
#      db-implementation=redis (:25063): search, CPU at 90 % (the server's CPU plus
#      redis-server's), latency at 90 %.
#   4. sipshard's default settings under a sustained REGISTER load (transaction table bound).
#   5. Latency of every server at one common rate ($SAME_REG REGISTER/s, $SAME_CALL calls/s),
#      twice.
#   8. TLS and WebSocket over TLS (issue 7), driven by sipshard-load (SIPp here has no TLS):
#      Kamailio with bench/kamailio-tls.cfg (tls + websocket + xhttp modules, usrloc in memory,
#      TLS :5072, WSS :5073) vs sipshard --threads 2 (sips: :25064, transport=wss :25065), a
#      P-256 CA and server certificate made with openssl for the run (the generator trusts
#      the CA: --tls-ca), full handshakes only (no session resumption). For each server:
#      (b) REGISTER over $TLS_CONNS persistent TLS connections, (c) the same over WSS, and
#      (a) REGISTER over a new TLS connection each (--connection-per-request: one TCP set-up,
#      one full handshake, one REGISTER, close), i.e. handshakes per second. Each: the
#      highest clean rate (the search of phase 1: a step passes when every scheduled REGISTER
#      got a 200 with no failure, timeout, send error or failed connection, >= 95 % of the
#      rate was sent and answered, and the p99 from the intended send is <= 500 ms: over a
#      stream nothing is retransmitted, so lateness is what shows an overloaded server), then
#      at 90 % of it 2 CPU runs per server, interleaved (server CPU from
#      schedstat as in cpu_run; latency p50/p99 from sipshard-load's JSON), and one run of
#      the faster server at the slower one's 90 % rate. Kamailio runs with tcp_children=2
#      for (b) and (c); for (a) with tcp_children=$KAMT_HS_CHILDREN, because Kamailio 5.6.3
#      with OpenSSL 3 (Debian 12) corrupts its shared memory when two workers run handshakes
#      at once (kamailio/kamailio#3791; tls_threads_mode, the fix, came in 5.7/5.8): a last
#      step shows it with 2 workers. Each step of (a) binds a fresh source address
#      (127.0.1.1-40 in turn, listed in sipshard's DoS white-list so that it is trusted as
#      127.0.0.1 is): from one address, the ports left in TIME_WAIT by earlier steps made the
#      generator's bind()/connect() crawl. sipshard's admin endpoint (:25066) gives, per
#      step, what the node dropped or answered 503 (node[...] in the log). Logs:
#      kamailio-tls-*.log, sipshard-tls.log; every sipshard-load summary in phase8-json/.
#
# The servers of phases 1-5 and 7 (Kamailio :5070, sipshard :25060 and :25061) are started
# only when one of those phases is asked for.
#
# About 15 minutes (a failing step costs up to 10 s and is retried once); phase 8 alone as long.
# sipshard runs with transaction-table-capacity raised to 4194304 in phases 1-3 (phase 4
# shows why); everything else at its defaults, log-level=warning. Kamailio: debug=0.
set -uo pipefail

# The whole script is one compound command, read entirely before it starts: editing this file
# while a run goes on (a 25-minute run) cannot change what the run executes.
{

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${1:-$ROOT/bench/results/$(date -u +%F)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/sipshard-bench.XXXXXX)
TOOL="python3 $ROOT/bench/benchtool.py"
DUR=${DUR:-4}            # seconds of load per search step
DUR90=${DUR90:-5}        # seconds of load per run at 90 %
REG_START=${REG_START:-4000}
REG_MAX=${REG_MAX:-64000}
CALL_START=${CALL_START:-500}
CALL_MAX=${CALL_MAX:-16000}
HOP_RATE=${HOP_RATE:-4000}
SAME_REG=${SAME_REG:-6000}   # phase 5: a REGISTER rate every server sustains
SAME_CALL=${SAME_CALL:-2000} # phase 5: a call rate both servers sustain
KAM_PORT=5070
SS_PORT=25060
SS1_PORT=25061
SSDEF_PORT=25062
RESP_PORT=25069
REG_SIPP_PORT=27001
LIMIT=1200               # upper bound on any server's life (s)
SS_CAP=4194304
# Every REGISTER of the bench is a new AOR with Expires 3600, so a node accumulates millions of
# bindings over a run: the per-shard bound (default 1,048,576, then 503 Registrar Full) is raised
# as Kamailio's shared memory is (-m 4096).
SS_AORS=module::Registrar/max-aors-per-shard=4194304
REDIS_PORT=26399
KAMR_PORT=5071
SSR_PORT=25063
RESPL_PORT=25071
LOADGEN_RATE=${LOADGEN_RATE:-10000}

exec > >(tee -a "$OUT/run.log") 2>&1
declare -A SERVER_CMD    # each server's command line, by the variable holding its pid
BG=()                    # `timeout` pids of everything started in the background
cleanup() {
	local p
	for p in "${BG[@]}"; do kill "$p" 2> /dev/null; done
	# wait for these only: a bare `wait` would also wait for the `tee` of the log, which
	# waits for this script's output to close
	for p in "${BG[@]}"; do wait "$p" 2> /dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '%s %s\n' "$(date -u +%T)" "$*"; }

BIN_DIR=${SIPSHARD_BIN_DIR:-target/release}
cp "$BIN_DIR/sipshard" "$WORK/" || exit 1
cp "$BIN_DIR/sipshard-load" "$WORK/" 2> /dev/null || true
{
	echo "date: $(date -u '+%F %T') UTC"
	echo "host: $(uname -srm), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	echo "sipshard: $BIN_DIR/sipshard sha256 $(sha256sum "$BIN_DIR/sipshard" | cut -c1-16), modified $(date -u -r "$BIN_DIR/sipshard" '+%F %T') UTC"
	[ -f "$BIN_DIR/PROVENANCE" ] && sed 's/^/  provenance: /' "$BIN_DIR/PROVENANCE"
	echo "working tree now: HEAD $(git rev-parse --short HEAD), $(git status --porcelain -- engine net registrar | grep -vc '^??') modified tracked paths under engine/ net/ registrar/"
	echo "kamailio: $(kamailio -v | head -1)"
	echo "sipp: $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1)"
	echo "DUR=$DUR DUR90=$DUR90"
} > "$OUT/env.txt"
cat "$OUT/env.txt"
top -bn1 | head -15 > "$OUT/top-start.txt"

load() { cut -d' ' -f1-3 /proc/loadavg; }
# busy_ticks: CPU time the whole machine spent busy so far (/proc/stat, 1/100 s): every
# process, ours and other engineers', so that a noisy neighbour shows in the results.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# ---- servers ---------------------------------------------------------------------------

# start_sipshard VAR PORT THREADS [--set ...]: starts a node; VAR gets its pid.
start_sipshard() {
	local var=$1 port=$2 threads=$3
	shift 3
	local logf="$WORK/sipshard-$port.log"
	local cmd=(sipshard --set "global/transports=sip:127.0.0.1:$port"
		--set 'module::Registrar/reg-domains=127.0.0.1 localhost'
		--set global/log-level=warning --set global/admin-listen= --threads "$threads" "$@")
	timeout "$LIMIT" "$WORK/sipshard" "${cmd[@]:1}" > "$logf" 2>&1 &
	local t=$!
	BG+=("$t")
	LAST_T=$t
	SERVER_CMD[$var]=$(printf '%q ' "${cmd[@]}")
	for _ in $(seq 50); do
		grep -q "listening" "$logf" && break
		sleep 0.1
	done
	grep -q "listening" "$logf" || { log "sipshard on $port did not start"; cat "$logf"; exit 1; }
	printf -v "$var" '%s' "$(pgrep -P "$t" | head -1)"
}

# start_kamailio VAR CFG PORT: starts Kamailio with bench/CFG listening on PORT; VAR gets the
# pid of its main process.
start_kamailio() {
	local var=$1 cfg=$2 port=$3
	local logf="$WORK/${cfg%.cfg}.log"
	timeout "$LIMIT" kamailio -f "$ROOT/bench/$cfg" -DD -E -m 4096 -M 32 -x tlsf -X tlsf \
		> "$logf" 2>&1 &
	local t=$!
	BG+=("$t")
	LAST_T=$t
	SERVER_CMD[$var]="kamailio -f bench/$cfg -DD -E -m 4096 -M 32 -x tlsf -X tlsf"
	for _ in $(seq 50); do
		ss -Hlun "sport = :$port" | grep -q . && break
		sleep 0.1
	done
	sleep 1
	printf -v "$var" '%s' "$(pgrep -P "$t" -x kamailio | head -1)"
	[ -n "${!var}" ] || { log "kamailio ($cfg) did not start"; cat "$logf"; exit 1; }
}

# A redis-server for phase 6 (no persistence; the version row db_redis needs is written by
# redis_reset).
start_redis() {
	timeout "$LIMIT" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
		--appendonly no > "$WORK/redis.log" 2>&1 &
	local t=$!
	BG+=("$t")
	for _ in $(seq 50); do
		redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1 && break
		sleep 0.1
	done
	REDIS_PID=$(pgrep -P "$t" -x redis-server | head -1)
	[ -n "$REDIS_PID" ] || { log "redis-server did not start"; cat "$WORK/redis.log"; exit 1; }
	redis_reset
}
redis_reset() {
	redis-cli -p "$REDIS_PORT" flushall > /dev/null
	redis-cli -p "$REDIS_PORT" hset version:entry::location table_name location table_version 9 > /dev/null
}

# pids whose CPU counts as the server's: kamailio's main process and its children; a
# sipshard process (its threads are counted through /proc/PID/task); in phase 6, the
# redis-server as well.
server_pids() {
	case $1 in
	kam) echo "$KAM_PID $(pgrep -P "$KAM_PID" | xargs)" ;;
	kamr) echo "$KAMR_PID $(pgrep -P "$KAMR_PID" | xargs) $REDIS_PID" ;;
	kamt) echo "$KAMT_PID $(pgrep -P "$KAMT_PID" | xargs)" ;;
	SSR_PID) echo "$SSR_PID $REDIS_PID" ;;
	*) echo "${!1}" ;;
	esac
}
server_port() {
	case $1 in
	kam) echo $KAM_PORT ;; SS_PID) echo $SS_PORT ;; SS1_PID) echo $SS1_PORT ;;
	SSDEF_PID) echo $SSDEF_PORT ;; RESP_PID) echo $RESP_PORT ;;
	kamr) echo $KAMR_PORT ;; SSR_PID) echo $SSR_PORT ;; RESPL_PID) echo $RESPL_PORT ;;
	esac
}
cpu_ns() { $TOOL cpu $(server_pids "$1") | sed 's/.*sched_ns=\([0-9]*\).*/\1/'; }
cpu_ticks() { $TOOL cpu $(server_pids "$1") | sed 's/.*ticks=\([0-9]*\).*/\1/'; }

# ---- SIPp ------------------------------------------------------------------------------

# sipp_fg NAME TIMEOUT ARGS...: runs SIPp in the foreground in $WORK/NAME; leaves there
# stat.csv, errors.log, and time.txt ("wall user sys" of SIPp).
sipp_fg() {
	local name=$1 tmo=$2
	shift 2
	mkdir -p "$WORK/$name"
	(
		cd "$WORK/$name" && /usr/bin/time -f '%e %U %S' -o time.txt \
			timeout "$tmo" sipp "$@" -i 127.0.0.1 -nostdin -buff_size 4194304 \
			-trace_stat -stf stat.csv -fd 1 -trace_err -error_file errors.log > /dev/null 2>&1
	)
}

# sipp_uas NAME PORT CALLS TIMEOUT: a UAS in the background ($UAS_T: its timeout's pid).
sipp_uas() {
	local name=$1 port=$2 calls=$3 tmo=$4
	mkdir -p "$WORK/$name"
	(
		cd "$WORK/$name" && exec timeout "$tmo" sipp -sf "$ROOT/bench/sipp/uas.xml" \
			-i 127.0.0.1 -p "$port" -m "$calls" -nostdin -buff_size 4194304 \
			-trace_stat -stf stat.csv -fd 1 -trace_err -error_file errors.log > /dev/null 2>&1
	) &
	UAS_T=$!
	BG+=("$UAS_T")
	for _ in $(seq 30); do
		ss -Hlun "sport = :$port" | grep -q . && break
		sleep 0.05
	done
}

stat_of() { $TOOL stat "$WORK/$1/stat.csv" 2> /dev/null || echo "succ=0 fail=? retrans=?"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<< "$2"; }
# sum_stats STATLINE...: the counters of several SIPp clients added up.
sum_stats() {
	python3 -c '
import sys
tot = {}
for line in sys.argv[1:]:
    for w in line.split():
        k, _, v = w.partition("=")
        try: tot[k] = tot.get(k, 0) + int(v)
        except ValueError: tot[k] = v
print(" ".join(f"{k}={v}" for k, v in tot.items()))' "$@"
}
# errors_of NAME...: what SIPp complained about, counted (first 4 kinds).
errors_of() {
	local n
	for n in "$@"; do cat "$WORK/$n/errors.log" 2> /dev/null; done |
		grep -o "received 'SIP/2.0 [0-9]* [A-Za-z ]*\|while expecting '[^']*'\|can't be mapped to a known SIPp call\|receive timeout\|Max retransmission[^.]*" |
		sort | uniq -c | sort -rn | head -4 | tr -s ' ' | tr '\n' ';'
}
# udp_drops PORT: the kernel's drop counter summed over the UDP sockets bound to 127.0.0.1:PORT.
udp_drops() {
	awk -v h="0100007F:$(printf '%04X' "$1")" '$2 == h { d += $NF } END { print d + 0 }' /proc/net/udp
}

# verdict RATE COUNT HOLD STATLINE [UASSTATLINE]: pass/fail of one step (sets ACHIEVED).
verdict() {
	local rate=$1 count=$2 hold=$3 st=$4 uas=${5:-}
	local wall succ fail re
	wall=$(cat "$WORK/$NAME"*/time.txt 2> /dev/null | grep -v Command | cut -d' ' -f1 | sort -n | tail -1)
	[ -n "$wall" ] || wall=999
	succ=$(field succ "$st")
	fail=$(field fail "$st")
	re=$(field retrans "$st")
	ACHIEVED=$(python3 -c "print(round($succ / max(0.001, $wall - $hold)))")
	[ "$succ" = "$count" ] && [ "$fail" = 0 ] && [ "$re" = 0 ] || return 1
	if [ -n "$uas" ]; then
		[ "$(field fail "$uas")" = 0 ] && [ "$(field retrans "$uas")" = 0 ] || return 1
	fi
	python3 -c "import sys; sys.exit(0 if $ACHIEVED >= 0.95 * $rate else 1)"
}

# reg_step SERVERVAR RATE DURATION TAG: one REGISTER run; returns the verdict. The load
# comes from one SIPp per port in $CLIENTS (default: one, on $REG_SIPP_PORT), each at
# RATE / clients. An overloaded run is stopped after DURATION + 6 s (it fails).
reg_step() {
	local sv=$1 rate=$2 dur=$3 tag=$4
	local clients=${CLIENTS:-$REG_SIPP_PORT}
	local n
	n=$(wc -w <<< "$clients")
	local each=$((rate / n))
	local count=$((each * n * dur)) port d0
	port=$(server_port "$sv")
	NAME="reg-$tag-$rate-$RANDOM"
	d0=$(udp_drops "$port")
	local c names=() pids=()
	for c in $clients; do
		sipp_fg "$NAME-$c" $((dur + 6)) -sf "$ROOT/bench/sipp/register.xml" -p "$c" \
			-r "$each" -m $((each * dur)) -l $((each * 3)) -timeout $((dur + 5))s \
			"127.0.0.1:$port" &
		pids+=($!)
		names+=("$NAME-$c")
	done
	wait "${pids[@]}"
	local st sts=() drops
	for c in "${names[@]}"; do sts+=("$(stat_of "$c")"); done
	st=$(sum_stats "${sts[@]}")
	drops=$(($(udp_drops "$port") - d0))
	verdict "$((each * n))" "$count" 0 "$st"
	local rc=$?
	log "  REGISTER $tag rate=$((each * n)) clients=$n achieved=$ACHIEVED/s $st server_udp_drops=$drops sipp_time=[$(cat "$WORK/$NAME"*/time.txt 2> /dev/null | grep -v Command | tr '\n' ' ')] load=[$(load)] -> $([ $rc = 0 ] && echo PASS || echo FAIL)"
	[ $rc = 0 ] || echo "      errors: $(errors_of "${names[@]}")"
	return $rc
}

# call_step SERVERVAR RATE DURATION TAG: one calls run. Every step uses a fresh UAS port, a
# fresh UAC port and two fresh callees (registered from the UAS's port; their AORs are owned by
# sipshard's shard 0 and shard 1 and the UAC alternates between them, so half of the INVITE
# lookups cross shards). Fresh ports keep the INVITE retransmissions that a server still holds
# from an earlier, overloaded step (Kamailio's fr_inv_timer is 120 s) away from this step's
# UAS and UAC.
NEXT_PORT=27300
call_step() {
	local sv=$1 rate=$2 dur=$3 tag=$4
	local count=$((rate * dur)) port
	port=$(server_port "$sv")
	NEXT_PORT=$((NEXT_PORT + 2))
	local uas_port=$NEXT_PORT uac_port=$((NEXT_PORT + 1))
	NAME="call-$tag-$rate-$RANDOM"
	mkdir -p "$WORK/$NAME"
	local callees c
	callees=$($TOOL callees "c$uas_port" 127.0.0.1)
	{
		echo SEQUENTIAL
		for c in $callees; do echo "$c;"; done
	} > "$WORK/$NAME/callees.csv"
	for c in $callees; do
		python3 "$ROOT/bench/register_once.py" "$c" "$uas_port" 127.0.0.1 "$port" > /dev/null ||
			{ log "  REGISTER of $c from $uas_port failed"; return 1; }
	done
	local tmo=${CALL_TMO:-$((dur + 6))}
	local d0
	d0=$(udp_drops "$port")
	sipp_uas "$NAME-uas" "$uas_port" "$count" $((tmo + 10))
	local uas_t=$UAS_T
	sipp_fg "$NAME" "$tmo" -sf "$ROOT/bench/sipp/uac_call.xml" -inf "$WORK/$NAME/callees.csv" \
		-p "$uac_port" -r "$rate" -m "$count" -l $((rate * 4)) "127.0.0.1:$port"
	sleep 0.3
	kill "$uas_t" 2> /dev/null
	wait "$uas_t" 2> /dev/null
	local st su
	st=$(stat_of "$NAME")
	su=$(stat_of "$NAME-uas")
	verdict "$rate" "$count" 1 "$st" "$su"
	local rc=$?
	log "  CALLS $tag rate=$rate achieved=$ACHIEVED/s uac[$st] uas[$(field succ "$su") ok, $(field fail "$su") failed, $(field retrans "$su") retrans] server_udp_drops=$(($(udp_drops "$port") - d0)) sipp_time=[$(tail -1 "$WORK/$NAME/time.txt" 2> /dev/null)] load=[$(load)] -> $([ $rc = 0 ] && echo PASS || echo FAIL)"
	[ $rc = 0 ] || echo "      errors: uac: $(errors_of "$NAME") uas: $(errors_of "$NAME-uas")"
	return $rc
}

# search STEPFN SERVERVAR START MAX TAG: doubling then 4 bisections; a failed step is
# retried once after a pause. Sets BEST.
search() {
	local fn=$1 sv=$2 start=$3 max=$4 tag=$5
	local lo=0 hi=0 r=$start
	try() {
		$fn "$sv" "$1" "$DUR" "$tag" && return 0
		sleep 3
		$fn "$sv" "$1" "$DUR" "$tag-retry"
	}
	while [ "$r" -le "$max" ]; do
		if try "$r"; then lo=$r; r=$((r * 2)); else hi=$r; break; fi
		sleep 1
	done
	if [ "$hi" = 0 ]; then
		if [ "$lo" -lt "$max" ]; then
			if try "$max"; then lo=$max; else hi=$max; fi
		fi
	fi
	local i
	for i in 1 2 3 4; do
		[ "$hi" = 0 ] && break
		local mid=$(((lo + hi) / 2 / 100 * 100))
		[ "$mid" -le "$lo" ] && break
		sleep 2
		if try "$mid"; then lo=$mid; else hi=$mid; fi
	done
	BEST=$lo
	log "  => $tag: highest passing rate $BEST/s (lowest failing: $hi)"
}

# cpu_run KIND SERVERVAR RATE TAG: one run at RATE with CPU accounting and pidstat.
# Prints "cpu_s=... per1k_ms=..." into the summary.
cpu_run() {
	local kind=$1 sv=$2 rate=$3 tag=$4
	[ "$rate" -gt 0 ] || { log "  $tag: skipped (no passing rate)"; return 1; }
	local pids before after tb ta
	pids=$(server_pids "$sv" | tr ' ' ',')
	local pflags="-h -u"
	[ "$sv" = kam ] || pflags="-h -u -t"
	timeout $((DUR90 + 6)) pidstat $pflags -p "$pids" 1 > "$OUT/pidstat-$tag.txt" 2>&1 &
	local pst=$!
	BG+=("$pst")
	before=$(cpu_ns "$sv")
	tb=$(cpu_ticks "$sv")
	local busy0 busy1
	busy0=$(busy_ticks)
	if [ "$kind" = reg ]; then
		reg_step "$sv" "$rate" "$DUR90" "$tag"
	else
		call_step "$sv" "$rate" "$DUR90" "$tag"
	fi
	local rc=$?
	sleep 0.5
	after=$(cpu_ns "$sv")
	ta=$(cpu_ticks "$sv")
	busy1=$(busy_ticks)
	kill "$pst" 2> /dev/null
	wait "$pst" 2> /dev/null
	local succ sipp_t
	if [ "$kind" = reg ]; then
		succ=0
		for f in "$WORK/$NAME"-*/stat.csv; do succ=$((succ + $(field succ "$($TOOL stat "$f")"))); done
	else
		succ=$(field succ "$(stat_of "$NAME")")
	fi
	# SIPp's wall time (longest client) and CPU (all clients; for calls the UAC only)
	sipp_t=$(cat "$WORK/$NAME"*/time.txt | grep -v Command | awk '{w = $1 > w ? $1 : w; u += $2; s += $3} END {print w, u, s}')
	python3 - "$kind" "$tag" "$rate" "$succ" "$before" "$after" "$tb" "$ta" "$rc" "$sipp_t" "$((busy1 - busy0))" << 'EOF' | tee -a "$OUT/summary.txt"
import sys
kind, tag, rate, succ, b, a, tb, ta, rc, t, busy = sys.argv[1:]
succ = int(succ); cpu = (int(a) - int(b)) / 1e9; ticks = (int(ta) - int(tb)) / 100
wall, su, ss = (float(x) for x in t.split())
reqs = succ * (3 if kind == "call" else 1)
print(f"cpu {tag} rate={rate} ok={succ} requests={reqs} server_cpu_s={cpu:.3f} (ticks {ticks:.2f})"
      f" cpu_s_per_1k_requests={1000 * cpu / max(1, reqs):.4f}"
      f" requests_per_cpu_s={reqs / max(1e-9, cpu):.0f}"
      + (f" cpu_s_per_1k_calls={1000 * cpu / max(1, succ):.4f}" if kind == "call" else "")
      + f" sipp_cpu_s={su + ss:.2f} machine_busy_cpu_s={int(busy) / 100:.2f} wall_s={wall:.2f}"
      + f" step={'PASS' if rc == '0' else 'FAIL'}")
EOF
}

# lat_run KIND SERVERVAR RATE TAG: one run at RATE with a 1 s capture after 2 s of load.
lat_run() {
	local kind=$1 sv=$2 rate=$3 tag=$4 port
	[ "$rate" -gt 0 ] || { log "  $tag: skipped (no passing rate)"; return 1; }
	port=$(server_port "$sv")
	local pcap="$WORK/$tag.pcap"
	# about 1 s of traffic: 2 datagrams per REGISTER, 13 per call at the proxy's port
	local npkts=$((rate * 2))
	[ "$kind" = reg ] || npkts=$((rate * 13))
	(
		sleep 2.5
		exec timeout 5 tcpdump -Z root -c "$npkts" -i lo -nn -s 900 -B 65536 \
			--time-stamp-precision=nano -w "$pcap" udp port "$port" > "$WORK/$tag.tcpdump" 2>&1
	) &
	local tdp=$!
	BG+=("$tdp")
	if [ "$kind" = reg ]; then
		reg_step "$sv" "$rate" "$DUR90" "$tag"
	else
		call_step "$sv" "$rate" "$DUR90" "$tag"
	fi
	wait "$tdp" 2> /dev/null
	local drops
	drops=$(grep -o '[0-9]* packets dropped by kernel' "$WORK/$tag.tcpdump" | cut -d' ' -f1)
	echo "latency $tag rate=$rate $($TOOL pcap "$pcap" "$port" "$( [ "$kind" = reg ] && echo register || echo call)") tcpdump_dropped=${drops:-?}" |
		tee -a "$OUT/summary.txt"
	rm -f "$pcap"
}


# shard_of_port PORT: the sipshard ($SS_PID) shard thread whose CPU time grows most while 2,000
# OPTIONS come from 127.0.0.1:PORT (the kernel's SO_REUSEPORT choice for that source).
shard_of_port() {
	local a b
	a=$($TOOL threads "$SS_PID")
	mkdir -p "$WORK/probe-$1"
	(cd "$WORK/probe-$1" && timeout 15 sipp -sf "$ROOT/bench/sipp/options.xml" -i 127.0.0.1 -p "$1" \
		-r 2000 -m 2000 -timeout 8s -nostdin "127.0.0.1:$SS_PORT" > /dev/null 2>&1)
	b=$($TOOL threads "$SS_PID")
	python3 -c '
import sys
def parse(s): return {k: int(v) for k, v in (w.rsplit(":", 1) for w in s.split())}
a, b = parse(sys.argv[1]), parse(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b if k.startswith("shard-")}
best = max(d, key=d.get)
print(best, " ".join(f"{k}:{v/1e6:.0f}ms" for k, v in sorted(d.items())))' "$a" "$b"
}

# The default, the report's phases, also writes BENCHMARKS.md and bench/plots/ (REPORT_TO=ROOT);
# other phase lists leave their results in OUT only, unless REPORT_TO is set.
[ -z "${PHASES:-}" ] && REPORT_TO=${REPORT_TO-$ROOT}
PHASES=" ${PHASES:-9 10 11 12} "
has_phase() { [[ $PHASES == *" $1 "* ]]; }

# ---- phase 0: SIPp's own ceiling ----------------------------------------------------------
if has_phase 0; then
log "phase 0: SIPp ceiling (register.xml against a SIPp responder, register_responder.xml)"
mkdir -p "$WORK/responder"
(cd "$WORK/responder" && exec timeout 400 sipp -sf "$ROOT/bench/sipp/register_responder.xml" \
	-i 127.0.0.1 -p $RESP_PORT -nostdin -buff_size 4194304 > /dev/null 2>&1) &
RESP_T=$!
BG+=("$RESP_T")
sleep 0.5
RESP_PID=$(pgrep -P $RESP_T | head -1)
search reg_step RESP_PID 8000 "$REG_MAX" sipp-ceiling
SIPP_CEIL=$BEST
kill $RESP_T
echo "sipp_ceiling register.xml vs a SIPp responder (one SIPp each side): $SIPP_CEIL REGISTER/s" >> "$OUT/summary.txt"
fi

if has_phase 1 || has_phase 1b || has_phase 2 || has_phase 3 || has_phase 4 || has_phase 5 ||
	has_phase 7; then
start_kamailio KAM_PID kamailio.cfg $KAM_PORT
start_sipshard SS_PID $SS_PORT 2 --set global/transaction-table-capacity=$SS_CAP --set "$SS_AORS"
start_sipshard SS1_PID $SS1_PORT 1 --set global/transaction-table-capacity=$SS_CAP --set "$SS_AORS"
log "kamailio pids: $(server_pids kam); sipshard --threads 2 pid: $SS_PID; --threads 1 pid: $SS1_PID"
fi

# ---- phase 1: REGISTER ----------------------------------------------------------------------
if has_phase 1; then
log "phase 1: REGISTER, one SIPp client (one source port)"
search reg_step kam "$REG_START" "$REG_MAX" kamailio
KAM_REG=$BEST
sleep 2
search reg_step SS_PID "$REG_START" "$REG_MAX" sipshard
SS_REG=$BEST
sleep 2
search reg_step SS1_PID "$REG_START" "$REG_MAX" sipshard-threads1
SS1_REG=$BEST
echo "max_register one client: kamailio=$KAM_REG sipshard=$SS_REG sipshard_threads1=$SS1_REG" >> "$OUT/summary.txt"
K90=$((KAM_REG * 9 / 10))
S90=$((SS_REG * 9 / 10))
for i in 1 2; do
	sleep 2; cpu_run reg kam $K90 "reg90-kamailio-$i"
	sleep 2; cpu_run reg SS_PID $S90 "reg90-sipshard-$i"
done
sleep 2; cpu_run reg SS1_PID $((SS1_REG * 9 / 10)) "reg90-sipshard-threads1"
sleep 2; lat_run reg kam $K90 lat-reg90-kamailio
sleep 2; lat_run reg SS_PID $S90 lat-reg90-sipshard
sleep 2; lat_run reg SS1_PID $((SS1_REG * 9 / 10)) lat-reg90-sipshard-threads1
if [ "$S90" != "$K90" ]; then
	sleep 2; lat_run reg SS_PID $K90 lat-reg-at-kam90-sipshard
fi
fi

if has_phase 1b; then
log "phase 1b: REGISTER, two SIPp clients whose source ports reach different sipshard shards"
P1=$REG_SIPP_PORT
S1=$(shard_of_port $P1)
log "  port $P1 -> $S1"
P2=
for p in 27011 27021 27031 27041 27051 27061; do
	S2=$(shard_of_port $p)
	log "  port $p -> $S2"
	if [ "${S2%% *}" != "${S1%% *}" ]; then P2=$p; break; fi
done
if [ -n "$P2" ]; then
	export CLIENTS="$P1 $P2"
	search reg_step kam "$REG_START" "$REG_MAX" kamailio-2clients
	KAM_REG2=$BEST
	sleep 2
	search reg_step SS_PID "$REG_START" "$REG_MAX" sipshard-2clients
	SS_REG2=$BEST
	echo "max_register two clients ($CLIENTS): kamailio=$KAM_REG2 sipshard=$SS_REG2" >> "$OUT/summary.txt"
	sleep 2; cpu_run reg kam $((KAM_REG2 * 9 / 10)) "reg90-2clients-kamailio"
	sleep 2; cpu_run reg SS_PID $((SS_REG2 * 9 / 10)) "reg90-2clients-sipshard"
	unset CLIENTS
else
	echo "two clients: no probed port reached the other shard" >> "$OUT/summary.txt"
fi
fi

# ---- phase 2: calls --------------------------------------------------------------------------
if has_phase 2; then
log "phase 2: calls"
search call_step kam "$CALL_START" "$CALL_MAX" kamailio-calls
KAM_CALL=$BEST
sleep 2
search call_step SS_PID "$CALL_START" "$CALL_MAX" sipshard-calls
SS_CALL=$BEST
echo "max_calls kamailio=$KAM_CALL sipshard=$SS_CALL" >> "$OUT/summary.txt"
K90=$((KAM_CALL * 9 / 10))
S90=$((SS_CALL * 9 / 10))
for i in 1 2; do
	sleep 2; cpu_run call kam $K90 "call90-kamailio-$i"
	sleep 2; cpu_run call SS_PID $S90 "call90-sipshard-$i"
done
sleep 2; lat_run call kam $K90 lat-call90-kamailio
sleep 2; lat_run call SS_PID $S90 lat-call90-sipshard
if [ "$S90" != "$K90" ]; then
	sleep 2; lat_run call SS_PID $K90 lat-call-at-kam90-sipshard
fi
fi

# ---- phase 3: cross-shard hop ------------------------------------------------------------------
if has_phase 3; then
log "phase 3: cross-shard hop, REGISTER at $HOP_RATE/s from one client, --threads 1 vs --threads 2"
for i in 1 2 3; do
	sleep 2; cpu_run reg SS1_PID $HOP_RATE "hop-threads1-$i"
	sleep 2; cpu_run reg SS_PID $HOP_RATE "hop-threads2-$i"
done
fi

# ---- phase 4: sipshard defaults, sustained REGISTER ----------------------------------------------
if has_phase 4; then
log "phase 4: sipshard --threads 2 with default settings, REGISTER at 4000/s for 20 s"
start_sipshard SSDEF_PID $SSDEF_PORT 2
reg_step SSDEF_PID 4000 20 sipshard-defaults-sustained
D=$WORK/$NAME-$REG_SIPP_PORT
{
	echo "defaults_sustained 4000/s x 20 s: $(stat_of "$NAME-$REG_SIPP_PORT")"
	echo "  errors: $(errors_of "$NAME-$REG_SIPP_PORT")"
	echo "  per-second successful/failed: $(python3 -c "
import csv
rows = list(csv.reader(open('$D/stat.csv'), delimiter=';'))
h = rows[0]
print(' '.join(dict(zip(h, r))['SuccessfulCall(P)'] + '/' + dict(zip(h, r))['FailedCall(P)'] for r in rows[1:]))")"
} | tee -a "$OUT/summary.txt"
fi

# ---- phase 5: latency of every server at one common rate -----------------------------------------
if has_phase 5; then
log "phase 5: latency at common rates: REGISTER $SAME_REG/s, calls $SAME_CALL/s"
for i in 1 2; do
	sleep 2; lat_run reg kam "$SAME_REG" "lat-reg-common-kamailio-$i"
	sleep 2; lat_run reg SS_PID "$SAME_REG" "lat-reg-common-sipshard-$i"
	sleep 2; lat_run reg SS1_PID "$SAME_REG" "lat-reg-common-sipshard-threads1-$i"
	sleep 2; lat_run call kam "$SAME_CALL" "lat-call-common-kamailio-$i"
	sleep 2; lat_run call SS_PID "$SAME_CALL" "lat-call-common-sipshard-$i"
done
fi

cp "$WORK/kamailio.log" "$OUT/kamailio.log" 2> /dev/null
for f in "$WORK"/sipshard-*.log; do [ -f "$f" ] && cp "$f" "$OUT/"; done
top -bn1 | head -15 > "$OUT/top-end.txt"
# ---- phase 6: the bindings in Redis ----------------------------------------------------------------
if has_phase 6; then
log "phase 6: REGISTER with the bindings in Redis: Kamailio db_redis (usrloc write-through) vs sipshard db-implementation=redis"
start_redis
start_kamailio KAMR_PID kamailio-redis.cfg $KAMR_PORT
start_sipshard SSR_PID $SSR_PORT 2 --set global/transaction-table-capacity=$SS_CAP --set "$SS_AORS" \
	--set module::Registrar/db-implementation=redis \
	--set module::Registrar/redis-server-domain=127.0.0.1 \
	--set "module::Registrar/redis-server-port=$REDIS_PORT"
log "redis-server pid: $REDIS_PID; kamailio (redis) pids: $(server_pids kamr); sipshard (redis) pid: $SSR_PID"
search reg_step kamr "${REDIS_REG_START:-1000}" "$REG_MAX" kamailio-redis
KAMR_REG=$BEST
redis_reset
sleep 2
search reg_step SSR_PID "${REDIS_REG_START:-1000}" "$REG_MAX" sipshard-redis
SSR_REG=$BEST
echo "max_register redis: kamailio=$KAMR_REG sipshard=$SSR_REG" >> "$OUT/summary.txt"
for i in 1 2; do
	redis_reset; sleep 2; cpu_run reg kamr $((KAMR_REG * 9 / 10)) "redis-reg90-kamailio-$i"
	redis_reset; sleep 2; cpu_run reg SSR_PID $((SSR_REG * 9 / 10)) "redis-reg90-sipshard-$i"
done
redis_reset; sleep 2; lat_run reg kamr $((KAMR_REG * 9 / 10)) lat-redis-reg90-kamailio
redis_reset; sleep 2; lat_run reg SSR_PID $((SSR_REG * 9 / 10)) lat-redis-reg90-sipshard
fi

# ---- phase 7: the load generators ------------------------------------------------------------------
if has_phase 7; then
log "phase 7: SIPp vs sipshard-load against sipshard-load responder, then against Kamailio at $LOADGEN_RATE/s"
[ -x "$WORK/sipshard-load" ] || { log "no sipshard-load in $BIN_DIR"; exit 1; }
timeout "$LIMIT" "$WORK/sipshard-load" responder --listen "127.0.0.1:$RESPL_PORT" > "$WORK/responder.log" 2>&1 &
RESPL_T=$!
BG+=("$RESPL_T")
sleep 0.5
RESPL_PID=$(pgrep -P "$RESPL_T" | head -1)
search reg_step RESPL_PID 8000 "$REG_MAX" sipp-vs-responder
SIPP_RESP=$BEST
sleep 2
timeout 300 "$WORK/sipshard-load" register --target "127.0.0.1:$RESPL_PORT" --rate 400000 \
	--duration "$DUR" --search --json "$OUT/loadgen-search-responder.json" > "$WORK/loadgen-search.txt" 2>&1
LOAD_RESP=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["search"]["best"]))' \
	"$OUT/loadgen-search-responder.json" 2> /dev/null || echo 0)
echo "max_register vs responder: sipp=$SIPP_RESP sipshard_load=$LOAD_RESP" | tee -a "$OUT/summary.txt"
kill "$RESPL_T" 2> /dev/null
sleep 2
lat_run reg kam "$LOADGEN_RATE" lat-loadgen-sipp-kamailio
sleep 2
timeout 60 "$WORK/sipshard-load" register --target "127.0.0.1:$KAM_PORT" --rate "$LOADGEN_RATE" \
	--duration "$DUR90" --user-count 1000000 --first 5000000 --domain "127.0.0.1:$KAM_PORT" \
	--json "$OUT/loadgen-kamailio.json" \
	> "$WORK/loadgen-kamailio.txt" 2>&1
python3 - "$OUT/loadgen-kamailio.json" << 'PY' | tee -a "$OUT/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
lat = d["latency_ms"]
print(f"loadgen sipshard-load vs kamailio rate={d['rate']['offered']:.0f} achieved={d['rate']['achieved']:.0f}"
      f" answered={d['rate']['answered']:.0f} ok={d['counts']['ok']} retrans={d['counts']['retransmissions']}"
      f" p50_ms={lat['uncorrected']['p50_ms']:.3f} p99_ms={lat['uncorrected']['p99_ms']:.3f}"
      f" corrected_p50_ms={lat['corrected']['p50_ms']:.3f} corrected_p99_ms={lat['corrected']['p99_ms']:.3f}")
PY
fi

# ---- phase 8: TLS and WebSocket over TLS (issue 7) --------------------------------------------
TLSK_PORT=5072           # Kamailio, SIP over TLS
WSSK_PORT=5073           # Kamailio, SIP over secure WebSocket
TLSS_PORT=25064          # sipshard, sips:
WSSS_PORT=25065          # sipshard, transport=wss
TLS_CONNS=${TLS_CONNS:-4}            # (b), (c): persistent connections (generator threads)
HS_THREADS=${HS_THREADS:-2}          # (a): generator threads, each opening a connection per REGISTER
TLS_REG_START=${TLS_REG_START:-4000}
TLS_REG_MAX=${TLS_REG_MAX:-64000}
HS_START=${HS_START:-250}
HS_MAX=${HS_MAX:-16000}
KAMT_HS_CHILDREN=${KAMT_HS_CHILDREN:-1}
SSADM_PORT=25066         # sipshard's admin endpoint (/metrics): its drop counters per step
# (a) opens a connection per REGISTER from 127.0.0.1; each one closed leaves its port in
# TIME_WAIT for 60 s, and once ~25,000 of the 28,000 ephemeral ports are (a few steps of
# 1,000/s) the generator's bind() and connect() search the port space in the kernel (10-19 s
# of system CPU in a 5 s run) and it falls behind its schedule. So each step of (a) binds a
# fresh loopback address, 127.0.1.1-40 in turn, which sipshard lists in
# [module::DoSProtection] white-list: trusted as 127.0.0.1 is (no packet-rate limit or
# per-address connection cap; Kamailio has neither).
HS_LOCALS=40
hs_locals() { local i; for i in $(seq $HS_LOCALS); do printf '127.0.1.%d ' "$i"; done; }
NEXT_LOCAL=0
TLS_T1_MS=125            # the generator's T1: a REGISTER unanswered after 64*T1 = 8 s times out
# Over a stream nothing is retransmitted, so a server that falls behind still answers everything,
# late: a step must also have its answers arrive at >= 95 % of the rate and a p99 (from the
# intended send) under T1's default, 500 ms, where a UDP client would have retransmitted.
TLS_P99_MAX_MS=${TLS_P99_MAX_MS:-500}

# make_certs DIR: a P-256 CA and a server certificate for 127.0.0.1 and localhost signed by it
# (server-chain.pem = leaf + CA, server.key PKCS#8), and Kamailio's tls.cfg naming them.
make_certs() {
	local d=$1
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
			-out ca.pem -days 2 -subj "/CN=sipshard bench CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
				-out server.csr -subj "/CN=127.0.0.1" &&
			printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
				"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > ext.cnf &&
			openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
				-days 2 -extfile ext.cnf &&
			cat server.pem ca.pem > server-chain.pem &&
			openssl verify -CAfile ca.pem server.pem
	) > "$d/openssl.log" 2>&1 || { log "certificates: openssl failed"; cat "$d/openssl.log"; exit 1; }
	cat > "$d/tls.cfg" << EOF
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = $d/server-chain.pem
private_key = $d/server.key
EOF
}

# start_kamailio_tls VAR CHILDREN: Kamailio with bench/kamailio-tls.cfg and tcp_children=CHILDREN;
# VAR gets the pid of its main process.
start_kamailio_tls() {
	local var=$1 n=$2
	local logf="$WORK/kamailio-tls-$n-$RANDOM.log"
	timeout "$LIMIT" kamailio -f "$ROOT/bench/kamailio-tls.cfg" -A "TLS_CFG=\"$CERTS/tls.cfg\"" \
		-A "TCP_CHILDREN=$n" -DD -E -m 4096 -M 32 -x tlsf -X tlsf > "$logf" 2>&1 &
	local t=$!
	BG+=("$t")
	KAMT_T=$t
	SERVER_CMD[$var]="kamailio -f bench/kamailio-tls.cfg -A TLS_CFG=... -A TCP_CHILDREN=$n -DD -E -m 4096 -M 32 -x tlsf -X tlsf"
	KAMT_LOG=$logf
	for _ in $(seq 50); do
		ss -Hltn "sport = :$WSSK_PORT" | grep -q . && break
		sleep 0.1
	done
	sleep 1
	printf -v "$var" '%s' "$(pgrep -P "$t" -x kamailio | head -1)"
	[ -n "${!var}" ] || { log "kamailio (kamailio-tls.cfg) did not start"; cat "$logf"; exit 1; }
}

# stop_kamailio_tls: stops the Kamailio of start_kamailio_tls; keeps its log. After the crash of
# a worker (the 2-worker handshake step) the main process and the other workers may not exit on
# SIGTERM (they sleep on a shared-memory lock): after 5 s they get SIGKILL, by pid.
stop_kamailio_tls() {
	local kids k
	kids=$(pgrep -P "$KAMT_PID" | xargs)
	kill "$KAMT_T" 2> /dev/null
	for _ in $(seq 50); do
		kill -0 "$KAMT_PID" 2> /dev/null || break
		sleep 0.1
	done
	if kill -0 "$KAMT_PID" 2> /dev/null; then
		log "  kamailio (pid $KAMT_PID) did not stop on SIGTERM: SIGKILL to it and its workers"
		kill -9 "$KAMT_PID" 2> /dev/null
	fi
	wait "$KAMT_T" 2> /dev/null
	sleep 0.5
	for k in $kids; do kill -9 "$k" 2> /dev/null; done
	keep_log "$KAMT_LOG"
}

# keep_log FILE: copies FILE into $OUT; one over 2,000 lines (Kamailio logs a line or more per
# refused or reset connection when overloaded) keeps its first 200 and last 800 lines and a count
# of its messages by kind.
keep_log() {
	local f=$1 dst
	dst="$OUT/$(basename "$1")"
	[ -f "$f" ] || return
	if [ "$(wc -l < "$f")" -le 2000 ]; then
		cp "$f" "$dst"
		return
	fi
	{
		echo "# $(wc -l < "$f") lines; by kind (the text after the process id, numbers dropped):"
		sed 's/^ *[0-9]*([0-9]*) //; s/0x[0-9a-f]*/0xN/g; s/[0-9][0-9]*/N/g' "$f" | cut -c1-160 | sort | uniq -c | sort -rn | head -30
		echo "# first 200 lines"
		head -200 "$f"
		echo "# ... last 800 lines"
		tail -800 "$f"
	} > "$dst"
}

# kamailio_tls_health LOGFILE: what Kamailio's log says went wrong, counted.
kamailio_tls_health() {
	echo "double_free=$(grep -c 'freeing already freed' "$1")" \
		"assertion=$(grep -c 'Assertion' "$1")" \
		"child_died=$(grep -c 'exited by a signal\|dumped core' "$1")" \
		"tls_errors=$(grep -c 'tls_h_read_f(): protocol level error' "$1")" \
		"lines=$(wc -l < "$1")"
}

# start_sipshard_tls VAR: sipshard --threads 2 listening sips: and wss with the run's certificate.
start_sipshard_tls() {
	local var=$1
	local logf="$WORK/sipshard-tls.log"
	timeout "$LIMIT" "$WORK/sipshard" \
		--set "global/transports=sips:127.0.0.1:$TLSS_PORT sip:127.0.0.1:$WSSS_PORT;transport=wss" \
		--set "global/tls-certificates-file=$CERTS/server-chain.pem" \
		--set "global/tls-certificates-private-key=$CERTS/server.key" \
		--set 'module::Registrar/reg-domains=127.0.0.1 localhost' \
		--set global/log-level=warning --set global/transaction-table-capacity=$SS_CAP \
		--set "$SS_AORS" --set "module::DoSProtection/white-list=$(hs_locals)" \
		--set "global/admin-listen=127.0.0.1:$SSADM_PORT" --threads 2 > "$logf" 2>&1 &
	local t=$!
	BG+=("$t")
	SERVER_CMD[$var]="sipshard --set global/transports=sips:127.0.0.1:$TLSS_PORT (and wss) --set global/tls-certificates-file=... --threads 2"
	for _ in $(seq 50); do
		grep -q "listening" "$logf" && break
		sleep 0.1
	done
	grep -q "listening" "$logf" || { log "sipshard (TLS) did not start"; cat "$logf"; exit 1; }
	printf -v "$var" '%s' "$(pgrep -P "$t" | head -1)"
}

# tls_port SERVERVAR: the port of SERVERVAR for $L_TRANSPORT.
tls_port() {
	case $1:$L_TRANSPORT in
	kamt:tls) echo $TLSK_PORT ;; kamt:wss) echo $WSSK_PORT ;;
	SST_PID:tls) echo $TLSS_PORT ;; SST_PID:wss) echo $WSSS_PORT ;;
	esac
}

# load_step SERVERVAR RATE DURATION TAG: one sipshard-load REGISTER run over $L_TRANSPORT with
# $L_THREADS threads and $L_EXTRA; every REGISTER is a new AOR (user numbers never reused).
# Passes when every scheduled REGISTER got a 200, nothing failed, timed out or could not be
# sent, no connection failed, >= 95 % of RATE was sent and answered, and the p99 (corrected)
# is at most $TLS_P99_MAX_MS ms. Sets NAME and LAST_SUMMARY.
NEXT_USER=10000000
load_step() {
	local sv=$1 rate=$2 dur=$3 tag=$4 port
	port=$(tls_port "$sv")
	NAME="$tag-$rate-$RANDOM"
	local json="$OUT/phase8-json/$NAME.json" first=$NEXT_USER
	NEXT_USER=$((NEXT_USER + rate * dur + 1000))
	local local_ip=127.0.0.1
	if [[ $L_EXTRA == *connection-per-request* ]]; then
		local_ip=127.0.1.$((NEXT_LOCAL % HS_LOCALS + 1))
		NEXT_LOCAL=$((NEXT_LOCAL + 1))
	fi
	local c0=
	[ "$sv" = SST_PID ] && c0=$(node_counters)
	# shellcheck disable=SC2086 # L_EXTRA: zero or more words
	timeout $((dur + 30)) "$WORK/sipshard-load" register --target "127.0.0.1:$port" \
		--domain "127.0.0.1:$port" --transport "$L_TRANSPORT" --tls-ca "$CERTS/ca.pem" \
		--threads "$L_THREADS" $L_EXTRA --local "$local_ip" --t1-ms $TLS_T1_MS --rate "$rate" --duration "$dur" \
		--user-count 1000000000 --first "$first" --json "$json" > "$WORK/$NAME.txt" 2>&1
	local out
	out=$(python3 - "$json" "$rate" "$TLS_P99_MAX_MS" << 'PY'
import json, sys
path, rate, p99_max = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
try:
    d = json.load(open(path))
except Exception as e:
    print(f"no summary ({type(e).__name__})")
    print("FAIL")
    sys.exit()
c, r, lat = d["counts"], d["rate"], d["latency_ms"]
conn = d.get("connections", {})
sched = d["settings"]["requests_scheduled"]
cpu = d.get("cpu_s") or {}
gen = cpu.get("user", 0) + cpu.get("system", 0)
statuses = ",".join(f"{k}:{v}" for k, v in sorted(d["statuses"].items()))
co, un = lat["corrected"], lat["uncorrected"]
clean = (c["sent"] == sched and c["ok"] == sched and c["failed"] == 0 and c["timed_out"] == 0
         and c["send_errors"] == 0 and conn.get("failed", 0) == 0 and r["achieved"] >= 0.95 * rate
         and r["answered"] >= 0.95 * rate and co["p99_ms"] <= p99_max)
print(f"achieved={r['achieved']:.0f}/s answered={r['answered']:.0f}/s scheduled={sched} sent={c['sent']}"
      f" ok={c['ok']} failed={c['failed']} timed_out={c['timed_out']} send_errors={c['send_errors']}"
      f" statuses=[{statuses}] connections={conn.get('opened')} handshakes={conn.get('tls_handshakes')}"
      f" conn_failed={conn.get('failed')} closed_by_peer={conn.get('closed_by_peer')}"
      f" p50_ms={co['p50_ms']:.3f} p99_ms={co['p99_ms']:.3f} max_ms={co['max_ms']:.1f}"
      f" uncorrected_p50_ms={un['p50_ms']:.3f} uncorrected_p99_ms={un['p99_ms']:.3f}"
      f" generator_cpu_s={gen:.2f}")
print("PASS" if clean else "FAIL")
PY
)
	LAST_SUMMARY="$(head -1 <<< "$out") from=$local_ip"
	[ "$sv" = SST_PID ] && LAST_SUMMARY="$LAST_SUMMARY node[$(counter_delta "$c0" "$(node_counters)")]"
	local rc=1
	[ "$(tail -1 <<< "$out")" = PASS ] && rc=0
	local alive=yes
	[ "$sv" = kamt ] && ! kill -0 "$KAMT_PID" 2> /dev/null && alive=NO
	[ "$sv" = SST_PID ] && ! kill -0 "$SST_PID" 2> /dev/null && alive=NO
	log "  REGISTER $L_TRANSPORT $tag rate=$rate $LAST_SUMMARY server_alive=$alive load=[$(load)] -> $([ $rc = 0 ] && echo PASS || echo FAIL)"
	[ $rc = 0 ] || grep -v '^ *[0-9]*s \|^latency\|^from \|^\[' "$WORK/$NAME.txt" | grep -i 'error\|refused\|reset\|sipshard-load' | head -3 | sed 's/^/      /'
	[ "$alive" = yes ] || { log "  the server is gone"; return 2; }
	return $rc
}

# node_counters: sipshard's counters of what it dropped or refused (its /metrics), one line.
node_counters() {
	curl -s --max-time 2 "http://127.0.0.1:$SSADM_PORT/metrics" |
		grep -E '^sipshard_(drops_total|overloaded_total|service_unavailable_sent_total|connections_refused_total|connections_timed_out_total)[{ ]' |
		sed 's/ /=/' | tr '\n' ' '
}
# counter_delta BEFORE AFTER: the counters of node_counters that grew, and by how much.
counter_delta() {
	python3 -c '
import sys
def parse(s):
    return {k: float(v) for k, v in (w.rsplit("=", 1) for w in s.split())}
a, b = parse(sys.argv[1]), parse(sys.argv[2])
d = {k.replace("sipshard_", ""): v - a.get(k, 0) for k, v in b.items() if v != a.get(k, 0)}
print(" ".join(f"{k}=+{v:.0f}" for k, v in sorted(d.items())) or "no drops")' "$1" "$2"
}

# tls_cpu_run SERVERVAR RATE TAG: one load_step of DUR90 s at RATE with the server's CPU time
# (schedstat, as cpu_run) and pidstat alongside; a line into the summary.
tls_cpu_run() {
	local sv=$1 rate=$2 tag=$3
	[ "$rate" -gt 0 ] || { log "  $tag: skipped (no passing rate)"; return 1; }
	local pids before after tb ta th0 th1 busy0 busy1
	pids=$(server_pids "$sv" | tr ' ' ',')
	local pflags="-h -u"
	[ "$sv" = kamt ] || pflags="-h -u -t"
	timeout $((DUR90 + 12)) pidstat $pflags -p "$pids" 1 > "$OUT/pidstat-$tag.txt" 2>&1 &
	local pst=$!
	BG+=("$pst")
	before=$(cpu_ns "$sv")
	tb=$(cpu_ticks "$sv")
	[ "$sv" = SST_PID ] && th0=$($TOOL threads "$SST_PID")
	busy0=$(busy_ticks)
	load_step "$sv" "$rate" "$DUR90" "$tag"
	local rc=$?
	sleep 0.5
	after=$(cpu_ns "$sv")
	ta=$(cpu_ticks "$sv")
	[ "$sv" = SST_PID ] && th1=$($TOOL threads "$SST_PID")
	busy1=$(busy_ticks)
	kill "$pst" 2> /dev/null
	wait "$pst" 2> /dev/null
	python3 - "$tag" "$rate" "$OUT/phase8-json/$NAME.json" "$before" "$after" "$tb" "$ta" "$rc" \
		"$((busy1 - busy0))" "${th0:-}" "${th1:-}" "$(sed -n 's/.* node\[\(.*\)\]$/\1/p' <<< "$LAST_SUMMARY")" \
		<< 'EOF' | tee -a "$OUT/summary.txt"
import json, sys
tag, rate, path, b, a, tb, ta, rc, busy, th0, th1, node = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception:
    print(f"cpu {tag} rate={rate} no summary from sipshard-load step=FAIL")
    sys.exit()
ok = d["counts"]["ok"]
cpu = (int(a) - int(b)) / 1e9
ticks = (int(ta) - int(tb)) / 100
conn = d.get("connections", {})
co, un = d["latency_ms"]["corrected"], d["latency_ms"]["uncorrected"]
g = d.get("cpu_s") or {}
split = ""
if th0 and th1:
    def parse(s): return {k: int(v) for k, v in (w.rsplit(":", 1) for w in s.split())}
    p0, p1 = parse(th0), parse(th1)
    dd = {k: (p1[k] - p0.get(k, 0)) / 1e9 for k in p1 if k.startswith("shard-")}
    split = " shard_cpu_s=[" + " ".join(f"{k}:{v:.2f}" for k, v in sorted(dd.items())) + "]"
print(f"cpu {tag} rate={rate} ok={ok} handshakes={conn.get('tls_handshakes')}"
      f" server_cpu_s={cpu:.3f} (ticks {ticks:.2f})"
      f" cpu_s_per_1k_requests={1000 * cpu / max(1, ok):.4f}"
      f" requests_per_cpu_s={ok / max(1e-9, cpu):.0f}{split}"
      f" p50_ms={co['p50_ms']:.3f} p99_ms={co['p99_ms']:.3f}"
      f" uncorrected_p50_ms={un['p50_ms']:.3f} uncorrected_p99_ms={un['p99_ms']:.3f}"
      f" achieved={d['rate']['achieved']:.0f}/s answered={d['rate']['answered']:.0f}/s"
      f" generator_cpu_s={g.get('user', 0) + g.get('system', 0):.2f}"
      f" machine_busy_cpu_s={int(busy) / 100:.2f} step={'PASS' if rc == '0' else 'FAIL'}"
      + (f" node=[{node}]" if node else ""))
EOF
}

# tls_compare KIND TAG START MAX: search both servers, then 2 CPU runs each at 90 % of its
# own highest clean rate (interleaved), and the faster one at the slower one's 90 %.
tls_compare() {
	local kind=$1 tag=$2 start=$3 max=$4
	search load_step kamt "$start" "$max" "kamailio-$tag"
	local k=$BEST
	sleep 2
	search load_step SST_PID "$start" "$max" "sipshard-$tag"
	local s=$BEST
	echo "max_$kind: kamailio=$k sipshard=$s ($L_TRANSPORT, $L_THREADS generator threads${L_EXTRA:+, $L_EXTRA})" |
		tee -a "$OUT/summary.txt"
	local k90=$((k * 9 / 10)) s90=$((s * 9 / 10)) i
	for i in 1 2; do
		sleep 2; tls_cpu_run kamt "$k90" "$tag-90-kamailio-$i"
		sleep 2; tls_cpu_run SST_PID "$s90" "$tag-90-sipshard-$i"
	done
	if [ "$s90" -gt "$k90" ] && [ "$k90" -gt 0 ]; then
		sleep 2; tls_cpu_run SST_PID "$k90" "$tag-at-kamailio90-sipshard"
	elif [ "$k90" -gt "$s90" ] && [ "$s90" -gt 0 ]; then
		sleep 2; tls_cpu_run kamt "$s90" "$tag-at-sipshard90-kamailio"
	fi
}

if has_phase 8; then
log "phase 8: TLS and WSS (issue 7): Kamailio tls+websocket vs sipshard --threads 2, driven by sipshard-load"
[ -x "$WORK/sipshard-load" ] || { log "no sipshard-load in $BIN_DIR"; exit 1; }
mkdir -p "$OUT/phase8-json"
CERTS=$WORK/certs
make_certs "$CERTS"
{
	echo "phase 8 certificate: $(openssl x509 -in "$CERTS/server.pem" -noout -subject -ext subjectAltName | tr '\n' ' ' | tr -s ' ')," \
		"key $(openssl pkey -in "$CERTS/server.key" -noout -text 2> /dev/null | head -1)," \
		"chain leaf + CA; generator: --tls-ca (full handshakes, no resumption)"
	echo "phase 8 generator: $TLS_CONNS threads (persistent connections) for (b) and (c), $HS_THREADS for (a); T1 $TLS_T1_MS ms; DUR=$DUR DUR90=$DUR90; uptime: $(uptime)"
} | tee -a "$OUT/summary.txt"
start_sipshard_tls SST_PID
start_kamailio_tls KAMT_PID 2
log "sipshard (TLS, WSS) pid: $SST_PID; kamailio-tls.cfg pids (tcp_children=2): $(server_pids kamt)"

# (b) REGISTER over persistent TLS connections
log "phase 8 (b): REGISTER over $TLS_CONNS persistent TLS connections"
L_TRANSPORT=tls L_THREADS=$TLS_CONNS L_EXTRA=
tls_compare register_tls tls "$TLS_REG_START" "$TLS_REG_MAX"

# (c) the same over WSS
# (the help is read whole first: grep -q would close the pipe early, and pipefail would fail it)
LOAD_HELP=$("$WORK/sipshard-load" register --help 2>&1)
if grep -q 'wss' <<< "$LOAD_HELP"; then
	log "phase 8 (c): REGISTER over $TLS_CONNS persistent WSS connections"
	L_TRANSPORT=wss L_THREADS=$TLS_CONNS L_EXTRA=
	tls_compare register_wss wss "$TLS_REG_START" "$TLS_REG_MAX"
else
	echo "phase 8 (c) skipped: this sipshard-load has no --transport wss" | tee -a "$OUT/summary.txt"
fi
echo "kamailio (tcp_children=2) log after (b), (c): $(kamailio_tls_health "$KAMT_LOG")" | tee -a "$OUT/summary.txt"
stop_kamailio_tls

# (a) handshakes: a new TLS connection per REGISTER
log "phase 8 (a): a new TLS connection (full handshake) per REGISTER; kamailio tcp_children=$KAMT_HS_CHILDREN"
start_kamailio_tls KAMT_PID "$KAMT_HS_CHILDREN"
log "kamailio-tls.cfg pids (tcp_children=$KAMT_HS_CHILDREN): $(server_pids kamt)"
L_TRANSPORT=tls L_THREADS=$HS_THREADS L_EXTRA=--connection-per-request
tls_compare handshakes handshake "$HS_START" "$HS_MAX"
echo "kamailio (tcp_children=$KAMT_HS_CHILDREN) log after (a): $(kamailio_tls_health "$KAMT_LOG")" | tee -a "$OUT/summary.txt"
stop_kamailio_tls

# Kamailio 5.6.3 + OpenSSL 3 with two workers doing handshakes: what happens
if [ "$KAMT_HS_CHILDREN" != 2 ]; then
	log "phase 8: kamailio tcp_children=2 under handshakes (the reason for tcp_children=$KAMT_HS_CHILDREN in (a))"
	start_kamailio_tls KAMT_PID 2
	for r in 600 1000 1500; do
		load_step kamt "$r" "$DUR" kamailio-handshake-2workers
		[ $? = 2 ] && break
		sleep 2
	done
	echo "kamailio (tcp_children=2) under handshakes: last step [$LAST_SUMMARY]; log: $(kamailio_tls_health "$KAMT_LOG")" |
		tee -a "$OUT/summary.txt"
	stop_kamailio_tls
fi
keep_log "$WORK/sipshard-tls.log"
echo "phase 8 end: uptime: $(uptime)" | tee -a "$OUT/summary.txt"
fi

# ---- phases 10, 9, 11, 12: the report (bench/report.py writes BENCHMARKS.md from them) ----------
# Driven by sipshard-load for both servers (the same generator, the same options), every run's
# server CPU time measured by the generator itself (--server-pid: the server's threads'
# schedstat at the run's start and end), every summary kept in $OUT/report/ with the command
# that made it in results-PHASE.jsonl (one JSON object a line, the first the machine and the
# code), which bench/report.py reads: a phase run again replaces only its own file.
#  10. Memory per binding: a fresh Kamailio (bench/kamailio.cfg, usrloc in memory) and a fresh
#      sipshard --threads 2 each get $MEM_BINDINGS REGISTERs of distinct AORs at $MEM_RATE/s;
#      the servers' proportional set size (PSS, /proc/PID/smaps_rollup, summed over Kamailio's
#      processes, whose shared memory PSS splits between them) before, at the end of the load,
#      and $MEM_SETTLE s later, when sipshard's transactions have ended (Timer J), at half the
#      bindings and at all of them: the cost per binding over all of them, and the marginal
#      cost of the second half (the memory the first half's transactions left to the
#      allocator is reused by the second's, so this is the bindings' own cost).
#   9. For each workload — REGISTER (bindings in memory), REGISTER (bindings in Redis, the
#      redis-server's CPU counted as the server's), calls (INVITE/180/200/ACK, 1 s hold,
#      BYE/200, to a `sipshard-load uas` whose $REP_USERS callees registered first), MESSAGE
#      (to the same callees), REGISTER over TLS ($TLS_CONNS persistent connections) — and each
#      server: `sipshard-load --search` (the highest clean rate up to the workload's maximum:
#      nothing failed, timed out or retransmitted, 97 % of the rate achieved; bisection to 2 %,
#      at most 10 probes of $DUR s), then its runs at 50 % and 90 % of that rate (latency
#      p50/p99/p99.9 from the intended send time, server CPU per 1,000).
#  11. Failover: the three-node lab (configs/lab/run on 127.0.0.2-4, the seed's sentinel
#      settings: down-after-milliseconds 10000) under REGISTER load at $FO_RATE/s through node 1
#      for $FO_SECS s, its Redis master killed (SIGKILL) $FO_KILL_AT s in: failed requests, and
#      the longest wait for a 200 (a REGISTER sent just after the kill waits for the new master:
#      the unavailability window). The same load against Kamailio's db_redis (which follows no
#      Sentinel) with its redis-server killed.
#  12. Scaling: sipshard --threads N for N = 1, 2, 4, 8, 16 up to this machine's CPUs: the
#      highest clean REGISTER rate and CPU per 1,000 at 90 % (on a machine with few CPUs the
#      generator shares them).
REP=$OUT/report
MEM_BINDINGS=${MEM_BINDINGS:-1000000}
MEM_RATE=${MEM_RATE:-10000}
MEM_SETTLE=${MEM_SETTLE:-40}
REP_THREADS=${REP_THREADS:-4}   # generator threads: over UDP, 4 source ports, which SO_REUSEPORT spreads over sipshard's shards
REP_USERS=${REP_USERS:-10000}
UAS_PORT=25090
SSMEM_ADMIN=25067
FO_RATE=${FO_RATE:-1000}
FO_SECS=${FO_SECS:-30}
FO_KILL_AT=${FO_KILL_AT:-5}
# The upper bound of each workload's search: about 1.5x the best either server reached in
# earlier runs (a probe far above the capacity costs up to 64*T1 of draining).
declare -A REP_MAX=([register]=${MAX_REGISTER:-40000} [register-redis]=${MAX_REGISTER_REDIS:-24000}
	[call]=${MAX_CALL:-6000} [message]=${MAX_MESSAGE:-24000} [register-tls]=${MAX_REGISTER_TLS:-32000})
REP_WORKLOADS=${REP_WORKLOADS:-register register-redis call message register-tls}

# rep_record KEY=VALUE...: one line of the current phase's results-$REP_PHASE.jsonl (values
# that read as numbers are numbers).
rep_record() {
	python3 -c '
import json, sys
d = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    for conv in (int, float):
        try:
            v = conv(v)
            break
        except ValueError:
            pass
    d[k] = v
print(json.dumps(d))' "$@" >> "$REP/results-$REP_PHASE.jsonl"
}
server_label() { case $1 in kam* | KAM*) echo kamailio ;; *) echo sipshard ;; esac; }
# pss_kib PID...: the processes' proportional set size, KiB.
pss_kib() {
	local p s=0 v
	for p in "$@"; do
		v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2> /dev/null)
		s=$((s + ${v:-0}))
	done
	echo "$s"
}
# stop_server TIMEOUTPID: stops a server started under `timeout` (SIGTERM, waited for).
stop_server() {
	kill "$1" 2> /dev/null
	wait "$1" 2> /dev/null
	sleep 1
}
# rep_phase N: the results of phase N start afresh, with the machine and the code.
rep_phase() {
	REP_PHASE=$1
	rm -f "$REP/results-$REP_PHASE.jsonl"
	rep_record kind=machine phase="$1" date="$(date -u '+%F %T') UTC" host="$(uname -srm)" nproc="$(nproc)" \
		cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
		memory_gib="$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)" \
		kamailio="$(kamailio -v | head -1)" redis="$(redis-server --version | cut -d' ' -f3)" \
		sipshard_sha256="$(sha256sum "$WORK/sipshard" | cut -c1-16)" \
		commit="$(git rev-parse --short HEAD)" dirty="$(git status --porcelain -- engine net registrar loadtest | grep -vc '^??')" \
		dur="$DUR" load_at_start="$(load)"
}

if has_phase 9 || has_phase 10 || has_phase 11 || has_phase 12; then
	[ -x "$WORK/sipshard-load" ] || { log "no sipshard-load in $BIN_DIR"; exit 1; }
	mkdir -p "$REP"
fi

# ---- phase 10: memory per binding ----------------------------------------------------------------
if has_phase 10; then
log "phase 10: memory per binding at $MEM_BINDINGS bindings ($MEM_RATE REGISTER/s of distinct AORs)"
rep_phase 10
HALF=$((MEM_BINDINGS / 2))
for sv in KAM_MEM_PID SS_MEM_PID; do
	if [ $sv = KAM_MEM_PID ]; then
		start_kamailio KAM_MEM_PID kamailio.cfg $KAM_PORT
		port=$KAM_PORT
	else
		# At its defaults (room for 1,048,576 AORs and 262,144 transactions per shard, reserved
		# up front): the other phases raise both to 4,194,304, whose tables alone would count
		# here once touched.
		start_sipshard SS_MEM_PID $SS_PORT 2 --set "global/admin-listen=127.0.0.1:$SSMEM_ADMIN"
		port=$SS_PORT
	fi
	t=$LAST_T
	pids=${!sv}
	[ $sv = KAM_MEM_PID ] && pids="$pids $(pgrep -P "${!sv}" | xargs)"
	sleep 2
	before=$(pss_kib $pids)
	name=memory-$(server_label $sv)
	ok=0
	for half in 1 2; do
		args="register --target 127.0.0.1:$port --domain 127.0.0.1:$port --threads $REP_THREADS --rate $MEM_RATE --count $HALF --duration 100000 --user-count $HALF --first $(((half - 1) * HALF))"
		# shellcheck disable=SC2086 # args: words
		timeout 600 "$WORK/sipshard-load" $args --json "$REP/$name-$half.json" > "$REP/$name-$half.txt" 2>&1
		at_end=$(pss_kib $pids)
		# sipshard keeps each UDP REGISTER's server transaction 64*T1 = 32 s after its 200
		# (Timer J, to answer retransmissions); Kamailio answers REGISTER statelessly. The
		# bindings' memory is read once those transactions are gone.
		sleep "$MEM_SETTLE"
		settled=$(pss_kib $pids)
		ok=$((ok + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["counts"]["ok"])' "$REP/$name-$half.json" 2> /dev/null || echo 0)))
		bindings=
		[ $sv = SS_MEM_PID ] && bindings=$(curl -s --max-time 2 "http://127.0.0.1:$SSMEM_ADMIN/metrics" |
			awk '/^sipshard_bindings[{ ]/ { s += $NF } END { print s + 0 }')
		log "  $(server_label $sv), half $half: PSS before ${before} KiB, at the end of the load ${at_end} KiB, $MEM_SETTLE s later ${settled} KiB; REGISTERs answered 200 so far: $ok; node's bindings gauge: ${bindings:-n/a}"
		rep_record kind=memory server="$(server_label $sv)" half=$half pss_before_kib="$before" \
			pss_at_end_kib="$at_end" pss_settled_kib="$settled" settle_s="$MEM_SETTLE" ok="$ok" \
			bindings_gauge="$bindings" json="$name-$half.json" pids_counted="$(wc -w <<< "$pids")" \
			command="sipshard-load $args --json $name-$half.json" server_command="${SERVER_CMD[$sv]}"
	done
	stop_server "$t"
done
fi

# ---- phase 9: the workloads ----------------------------------------------------------------------
# rep_args WORKLOAD PORT: the sipshard-load arguments of WORKLOAD against a server on PORT.
NEXT_REP_USER=100000000
rep_args() {
	local w=$1 port=$2
	case $w in
	register | register-redis)
		echo "register --target 127.0.0.1:$port --domain 127.0.0.1:$port --threads $REP_THREADS --user-count 1000000 --first $NEXT_REP_USER" ;;
	call)
		echo "call --target 127.0.0.1:$port --domain 127.0.0.1:$port --threads $REP_THREADS --users callee%06d --user-count $REP_USERS --hold-ms 1000" ;;
	message)
		echo "message --target 127.0.0.1:$port --domain 127.0.0.1:$port --threads $REP_THREADS --users callee%06d --user-count $REP_USERS" ;;
	register-tls)
		echo "register --target 127.0.0.1:$port --domain 127.0.0.1:$port --transport tls --tls-ca CA.pem --threads $TLS_CONNS --t1-ms $TLS_T1_MS --user-count 1000000 --first $NEXT_REP_USER" ;;
	esac
}
# rep_search WORKLOAD SERVERVAR PORT: the search and its 50 % and 90 % runs; a results line.
rep_search() {
	local w=$1 sv=$2 port=$3
	local server pids args max name
	server=$(server_label "$sv")
	pids=$(server_pids "$sv" | xargs | tr ' ' ',')
	max=${REP_MAX[$w]}
	args=$(rep_args "$w" "$port")
	NEXT_REP_USER=$((NEXT_REP_USER + 100000000))
	name=$w-$server
	log "  $name: sipshard-load $args --rate $max --duration $DUR --search --server-pid $pids"
	# shellcheck disable=SC2086 # args: words
	timeout 1200 "$WORK/sipshard-load" ${args/CA.pem/${CERTS:-}/ca.pem} --rate "$max" --duration "$DUR" --search \
		--server-pid "$pids" --json "$REP/$name.json" > "$REP/$name.txt" 2>&1
	grep '^search:' "$REP/$name.txt" | tr '\n' ';' | sed 's/^/    /; s/$/\n/'
	local alive=yes
	for p in ${pids//,/ }; do kill -0 "$p" 2> /dev/null || alive=no; done
	rep_record kind=search workload="$w" server="$server" json="$name.json" server_alive=$alive \
		command="sipshard-load $args --rate $max --duration $DUR --search --server-pid PIDS --json $name.json" \
		server_command="${SERVER_CMD[$sv]}" counted_pids="$(tr ',' ' ' <<< "$pids" | wc -w) ($(server_label "$sv")$([ "$w" = register-redis ] && echo ' + redis-server'))"
}
# register_callees SERVERVAR PORT: the call and MESSAGE workloads' callees, at the UAS.
register_callees() {
	timeout 60 "$WORK/sipshard-load" register --target "127.0.0.1:$2" --domain "127.0.0.1:$2" --contact "127.0.0.1:$UAS_PORT" \
		--users callee%06d --user-count "$REP_USERS" --count "$REP_USERS" --rate 5000 \
		> "$WORK/callees-$1.txt" 2>&1 || { log "  registering the callees at $1 failed"; tail -5 "$WORK/callees-$1.txt"; }
}

if has_phase 9; then
rep_phase 9
# sipshard at its defaults here (262,144 transactions and 1,048,576 AORs per shard): the
# REGISTER workloads cycle through 1,000,000 users per server (new bindings, then refreshes), and
# the raised tables of phases 1-8 cost it page faults on every fresh slot (a p50 of 0.5 s instead
# of 3 ms at 16,000 REGISTER/s on this machine).
SS_CAP=262144
SS_AORS=module::Registrar/max-aors-per-shard=1048576
log "phase 9: the report's workloads ($REP_WORKLOADS), Kamailio vs sipshard --threads 2, driven by sipshard-load"
has_w() { [[ " $REP_WORKLOADS " == *" $1 "* ]]; }
if has_w register || has_w call || has_w message; then
	start_kamailio KAM_PID kamailio.cfg $KAM_PORT
	SERVER_CMD[kam]=${SERVER_CMD[KAM_PID]}
	start_sipshard SS_PID $SS_PORT 2 --set global/transaction-table-capacity=$SS_CAP --set "$SS_AORS"
	if has_w call || has_w message; then
		timeout "$LIMIT" "$WORK/sipshard-load" uas --listen "127.0.0.1:$UAS_PORT" > "$WORK/uas.log" 2>&1 &
		BG+=("$!")
		sleep 0.5
		register_callees kam $KAM_PORT
		register_callees SS_PID $SS_PORT
	fi
	for w in register call message; do
		has_w $w || continue
		rep_search $w kam $KAM_PORT
		sleep 2
		rep_search $w SS_PID $SS_PORT
		sleep 2
	done
fi
if has_w register-redis; then
	start_redis
	start_kamailio KAMR_PID kamailio-redis.cfg $KAMR_PORT
	SERVER_CMD[kamr]=${SERVER_CMD[KAMR_PID]}
	start_sipshard SSR_PID $SSR_PORT 2 --set global/transaction-table-capacity=$SS_CAP --set "$SS_AORS" \
		--set module::Registrar/db-implementation=redis \
		--set module::Registrar/redis-server-domain=127.0.0.1 \
		--set "module::Registrar/redis-server-port=$REDIS_PORT"
	rep_search register-redis kamr $KAMR_PORT
	redis_reset
	sleep 2
	rep_search register-redis SSR_PID $SSR_PORT
fi
if has_w register-tls; then
	CERTS=$WORK/certs
	make_certs "$CERTS"
	start_kamailio_tls KAMT_PID 2
	SERVER_CMD[kamt]=${SERVER_CMD[KAMT_PID]}
	start_sipshard_tls SST_PID
	rep_search register-tls kamt $TLSK_PORT
	sleep 2
	rep_search register-tls SST_PID $TLSS_PORT
	stop_kamailio_tls
fi
fi

# ---- phase 11: failover ----------------------------------------------------------------------------
# fo_load TAG TARGET DOMAIN KILLPID: REGISTER load at $FO_RATE/s for $FO_SECS s; KILLPID gets
# SIGKILL $FO_KILL_AT s in. A results line.
fo_load() {
	local tag=$1 target=$2 domain=$3 victim=$4
	local args="register --target $target --domain $domain --threads 2 --rate $FO_RATE --duration $FO_SECS --user-count 1000000000 --first $NEXT_REP_USER"
	NEXT_REP_USER=$((NEXT_REP_USER + 100000000))
	# shellcheck disable=SC2086 # args: words
	timeout $((FO_SECS + 60)) "$WORK/sipshard-load" $args --json "$REP/failover-$tag.json" > "$REP/failover-$tag.txt" 2>&1 &
	local gen=$!
	sleep "$FO_KILL_AT"
	local killed_at
	killed_at=$(date -u +%T.%N | cut -c1-12)
	kill -9 "$victim"
	log "  $tag: redis-server $victim killed (SIGKILL) at $killed_at, $FO_KILL_AT s into the load"
	wait $gen
	rep_record kind=failover server="$tag" json="failover-$tag.json" kill_at_s="$FO_KILL_AT" rate="$FO_RATE" \
		command="sipshard-load $args --json failover-$tag.json; kill -9 MASTER after $FO_KILL_AT s" \
		server_command="$5"
	grep '^sent \|^final responses\|from intended' "$REP/failover-$tag.txt" | sed 's/^/    /'
}

if has_phase 11; then
rep_phase 11
log "phase 11: failover: the lab's Redis master killed under REGISTER load ($FO_RATE/s); then Kamailio db_redis"
LAB=$WORK/lab
LAB_PORTS=(LAB_SIP_PORT=25080 LAB_REDIS_PORT=25081 LAB_SENTINEL_PORT=25082 LAB_ADMIN_PORT=25083)
env "${LAB_PORTS[@]}" LAB_DIR="$LAB" SIPSHARD="$WORK/sipshard" timeout "$LIMIT" "$ROOT/configs/lab/run" > "$WORK/lab.log" 2>&1 &
LAB_T=$!
BG+=("$LAB_T")
for _ in $(seq 120); do
	grep -q 'lab: ready' "$WORK/lab.log" && break
	kill -0 $LAB_T 2> /dev/null || break
	sleep 0.5
done
if grep -q 'lab: ready' "$WORK/lab.log"; then
	master=$(cat "$LAB/pids/redis-1.pid")
	fo_load sipshard 127.0.0.2:25080 example.org "$master" \
		"configs/lab/run (3 redis-server, 3 redis-sentinel with down-after-milliseconds 10000, 3 sipshard --threads 2 with redis-failover-hold 20s)"
	sleep 2
	for i in 1 2 3; do
		echo "    sentinel on 127.0.0.$((i + 1)): master $(redis-cli -h 127.0.0.$((i + 1)) -p 25082 SENTINEL get-master-addr-by-name flexi1 | xargs)"
	done
	grep -h 'failover\|master' "$LAB"/sipshard-1/*.log 2> /dev/null | tail -5 | sed 's/^/    node 1: /'
else
	log "  the lab did not start:"
	tail -20 "$WORK/lab.log"
fi
env LAB_DIR="$LAB" "$ROOT/configs/lab/run" stop > /dev/null 2>&1
wait $LAB_T 2> /dev/null
cp "$WORK/lab.log" "$REP/failover-lab.log"
if ! kill -0 "${KAMR_PID:-0}" 2> /dev/null; then
	start_redis
	start_kamailio KAMR_PID kamailio-redis.cfg $KAMR_PORT
fi
redis_reset
fo_load kamailio 127.0.0.1:$KAMR_PORT 127.0.0.1:$KAMR_PORT "$REDIS_PID" "${SERVER_CMD[KAMR_PID]} (usrloc db_mode=1, db_redis at 127.0.0.1:$REDIS_PORT)"
fi

# ---- phase 12: scaling over shards -----------------------------------------------------------------
if has_phase 12; then
rep_phase 12
log "phase 12: scaling: sipshard --threads N, REGISTER search for each N up to $(nproc) CPUs"
port=25100
for n in 1 2 4 8 16; do
	[ "$n" -le "$(nproc)" ] || break
	# At its defaults, as in phase 9.
	start_sipshard SCALE_PID $port "$n"
	t=$LAST_T
	threads=$((n * 2 > REP_THREADS ? n * 2 : REP_THREADS))
	args="register --target 127.0.0.1:$port --domain 127.0.0.1:$port --threads $threads --user-count 1000000 --first $NEXT_REP_USER"
	NEXT_REP_USER=$((NEXT_REP_USER + 100000000))
	max=$((${REP_MAX[register]} * n / 2 + 20000))
	# shellcheck disable=SC2086 # args: words
	timeout 1200 "$WORK/sipshard-load" $args --rate $max --duration "$DUR" --search --server-pid "$SCALE_PID" \
		--json "$REP/scaling-$n.json" > "$REP/scaling-$n.txt" 2>&1
	grep '^search: highest' "$REP/scaling-$n.txt" | sed "s/^/    --threads $n: /"
	rep_record kind=scaling shards="$n" json="scaling-$n.json" \
		command="sipshard-load $args --rate $max --duration $DUR --search --server-pid PID --json scaling-$n.json" \
		server_command="${SERVER_CMD[SCALE_PID]}"
	stop_server "$t"
	port=$((port + 1))
done
fi

if compgen -G "$REP/results-*.jsonl" > /dev/null; then
	log "report: bench/report.py $OUT"
	python3 "$ROOT/bench/report.py" "$OUT" --sipshard-load "$WORK/sipshard-load" ${REPORT_TO:+--write "$REPORT_TO"}
fi

log "done; results in $OUT"

exit
}
