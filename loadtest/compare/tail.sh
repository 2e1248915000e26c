#!/usr/bin/env bash
# Where the fixed-rate tail comes from: run.sh's fixed-rate runs of nginx and Switchyard (same
# upstream, configurations, pinning and paced wrk), alternated, each with a loopback capture
# (tcpdump) and a scheduler trace of both cores (perf, sched:sched_switch). tail.py then gives,
# for every run, wrk's p99, the proxy-side p99 (from the client's request packet to the proxy's
# response packet), how many of the slowest 1% shared the proxy's core with another task (and
# which), and the p99 of the requests no other task touched; and the same-run ratios to nginx.
#
# Usage: loadtest/compare/tail.sh [--switchyard-bin PATH] [--b-args "ARGS"] [--rounds N]
#          [--duration S] [--rate R] [--connections N] [--base-port P] [--out DIR] [--neighbour]
#          [--floor-bin PATH]
# --b-args adds a second Switchyard, started with these extra run flags (e.g. "--cpu-slice off"),
# as a third candidate: an A/B of a runtime setting in the same runs. --neighbour keeps a busy loop
# running on the proxy core throughout (a CPU-bound process sharing the proxy's core, as the
# service beside a sidecar may be). --floor-bin adds the floor (`--example floor-proxy`, the least a
# tokio HTTP/1.1 proxy does per request, forwarding to the stable upstream alone) as a candidate.
# Needs nginx, wrk, tcpdump, perf and python3 (Debian: nginx wrk tcpdump linux-perf); loopback only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
B_ARGS=""
ROUNDS=6
DURATION=10
RATE=2000
CONNECTIONS=32
BASE_PORT=18600
OUT=""
NEIGHBOUR=0
FLOOR=""
die() { echo "tail.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --switchyard-bin) SWITCHYARD=${2:?}; shift 2 ;;
        --b-args) B_ARGS=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --neighbour) NEIGHBOUR=1; shift ;;
        --floor-bin) FLOOR=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ] || die "--rounds is 1 to 50"
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 2 ] && [ "$DURATION" -le 60 ] || die "--duration is 2 to 60 s"
[[ "$RATE" =~ ^[0-9]+$ ]] && [ "$RATE" -ge 100 ] && [ "$RATE" -le 20000 ] || die "--rate is 100 to 20000 req/s"
[[ "$CONNECTIONS" =~ ^[0-9]+$ ]] && [ "$CONNECTIONS" -ge 1 ] && [ "$CONNECTIONS" -le 1024 ] || die "--connections is 1 to 1024"
PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx wrk tcpdump perf python3 taskset; do command -v "$tool" >/dev/null || die "missing: $tool"; done
[ -x "$SWITCHYARD" ] || die "no $SWITCHYARD (cargo build --release)"
[ -z "$FLOOR" ] || [ -x "$FLOOR" ] || die "no $FLOOR (cargo build --release --example floor-proxy)"
# run.sh's pacing: each connection waits a whole number of ms, uniform in [0, D], per request.
DELAY_MS=$((2 * 1000 * CONNECTIONS / RATE))
[ "$DELAY_MS" -ge 2 ] || die "--rate $RATE is too high for $CONNECTIONS paced connections"

WORK=$(mktemp -d /tmp/switchyard-tail.XXXXXX)
mkdir -p "$WORK/tmp"
# Captures and traces go outside $WORK: Switchyard watches its configuration's directory.
OUT=${OUT:-$(mktemp -d /tmp/switchyard-tail-out.XXXXXX)}
mkdir -p "$OUT"
# shellcheck source=common.sh
. "$HERE/common.sh"
ports "$BASE_PORT"
fill upstream.conf
fill nginx.conf
fill switchyard.yaml
B_PORT=$((SWITCHYARD_PORT + 1))
sed "s/:$SWITCHYARD_PORT\"/:$B_PORT\"/" "$WORK/switchyard.yaml" >"$WORK/switchyard-b.yaml"
cat >"$WORK/paced.lua" <<EOF
delay = function() return math.random(0, $DELAY_MS) end
done = function(s, lat, req)
  io.write(string.format("JSON %d %d %d %d\n", s.requests, lat:percentile(50), lat:percentile(99),
    s.errors.status + s.errors.read + s.errors.connect + s.errors.timeout))
end
EOF
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
taskset -c 1 nginx -p "$WORK" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" -g 'daemon off;' \
    >/dev/null 2>&1 &
PIDS+=("$!")
taskset -c 0 nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -g 'daemon off;' \
    >/dev/null 2>&1 &
NGINX=$!
PIDS+=("$NGINX")
SWITCHYARD_WORKER_THREADS=1 RUST_LOG=warn taskset -c 0 "$SWITCHYARD" run --config "$WORK/switchyard.yaml" \
    >"$WORK/switchyard.out" 2>&1 &
SY=$!
PIDS+=("$SY")
declare -A PORT=([nginx]=$NGINX_PORT [switchyard]=$SWITCHYARD_PORT)
CANDIDATES=(nginx switchyard)
if [ -n "$B_ARGS" ]; then
    # shellcheck disable=SC2086 # the extra flags are words
    SWITCHYARD_WORKER_THREADS=1 RUST_LOG=warn taskset -c 0 "$SWITCHYARD" run --config "$WORK/switchyard-b.yaml" \
        $B_ARGS >"$WORK/switchyard-b.out" 2>&1 &
    PIDS+=("$!")
    PORT[switchyard-b]=$B_PORT
    CANDIDATES+=(switchyard-b)
fi
if [ -n "$FLOOR" ]; then
    taskset -c 0 "$FLOOR" --listen "127.0.0.1:$((B_PORT + 1))" --upstream "127.0.0.1:$STABLE_PORT" \
        --max-seconds "$((ROUNDS * 3 * (DURATION + 4) + 120))" >"$WORK/floor.out" 2>&1 &
    PIDS+=("$!")
    FLOOR_PID=$!
    PORT[floor]=$((B_PORT + 1))
    CANDIDATES+=(floor)
fi
wait_port "$STABLE_PORT" 10
for c in "${CANDIDATES[@]}"; do wait_port "${PORT[$c]}" 10; done
sleep 0.5
# Each candidate's threads: their time on the proxy core is the candidate's own.
ls "/proc/$(pgrep -P "$NGINX" | head -1)/task" >"$OUT/nginx.tids"
ls "/proc/$SY/task" >"$OUT/switchyard.tids"
[ -n "$B_ARGS" ] && ls "/proc/$(pgrep -f -- "switchyard-b.yaml" | head -1)/task" >"$OUT/switchyard-b.tids"
[ -n "$FLOOR" ] && ls "/proc/$FLOOR_PID/task" >"$OUT/floor.tids"
printf '%s\n' "${CANDIDATES[@]}" >"$OUT/candidates"
echo "{\"rate\": $RATE, \"neighbour\": $NEIGHBOUR, \"connections\": $CONNECTIONS, \"duration\": $DURATION, \"b_args\": \"$B_ARGS\"," \
    "\"upstream_ports\": [$STABLE_PORT, $CANARY_PORT], \"ports\": {$(for c in "${CANDIDATES[@]}"; do
        printf '"%s": %s, ' "$c" "${PORT[$c]}"; done | sed 's/, $//')}}" >"$OUT/meta.json"
if [ "$NEIGHBOUR" = 1 ]; then
    # Bounded by the whole run's length, should this script be killed before its cleanup.
    timeout "$((ROUNDS * ${#CANDIDATES[@]} * (DURATION + 3) + 60))" taskset -c 0 sh -c 'while :; do :; done' &
    PIDS+=("$!")
    echo "$!" >"$OUT/neighbour.pid"
fi
for c in "${CANDIDATES[@]}"; do
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/paced.lua" "http://127.0.0.1:${PORT[$c]}/" >/dev/null
done

measure() { # candidate round
    local c=$1 r=$2 tcpdump_pid perf_pid
    taskset -c 1 tcpdump -i lo -n -B 65536 -s 80 -w "$OUT/$c-$r.pcap" \
        "tcp and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)" 2>/dev/null &
    tcpdump_pid=$!
    taskset -c 1 perf record -q -k 1 -e sched:sched_switch -a -o "$OUT/$c-$r.perf" \
        -- sleep "$((DURATION + 1))" >/dev/null 2>&1 &
    perf_pid=$!
    # perf's clock is CLOCK_MONOTONIC (-k 1), tcpdump's the wall clock: the offset between them.
    python3 -c 'import time; print(time.time() - time.clock_gettime(time.CLOCK_MONOTONIC))' >"$OUT/$c-$r.offset"
    sleep 0.5
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$WORK/paced.lua" \
        "http://127.0.0.1:${PORT[$c]}/" | sed -n "s/^JSON /$c $r /p" >>"$OUT/wrk.txt"
    sleep 0.3
    kill -INT "$tcpdump_pid"
    wait "$tcpdump_pid" || true
    wait "$perf_pid" || true
}
: >"$OUT/wrk.txt"
echo "tail.sh: $ROUNDS rounds of ${DURATION}s at $RATE req/s per candidate (${CANDIDATES[*]}); output in $OUT" >&2
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order so each candidate runs first, in the middle and last alike.
    order=("${CANDIDATES[@]:$((r % ${#CANDIDATES[@]}))}" "${CANDIDATES[@]:0:$((r % ${#CANDIDATES[@]}))}")
    for c in "${order[@]}"; do measure "$c" "$r"; done
done
python3 "$HERE/tail.py" "$OUT"
