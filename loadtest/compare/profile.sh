#!/usr/bin/env bash
# Profile one Switchyard binary under the side-by-side load of run.sh: the same upstream, config,
# pinning and wrk closed loop, with `perf record` (the cpu-clock software event: this VM has no
# hardware counters) attached to the proxy for the measured seconds. Prints the hottest symbols
# (self time) and the user/sys CPU per request; keeps perf.data when --keep is given.
#
# Usage: loadtest/compare/profile.sh [--switchyard-bin PATH] [--duration S] [--connections N]
#          [--top N] [--base-port P] [--body-kb N] [--rate R] [--nginx] [--floor-bin PATH]
#          [--textbook-bin PATH] [--upstream-h2] [--keep] [--no-perf]
# --no-perf measures the CPU per request alone (no profiler attached): alternate two binaries with it
# for an A/B of a change. --body-kb N makes the upstream answer N KB of random bytes (a file) in
# place of run.sh's 3-byte "ok": the cost of moving bodies rather than heads. --rate R paces wrk as
# run.sh's fixed-rate runs do (about R req/s over 32 connections unless --connections says, each
# waiting a random whole number of milliseconds before each request), where the proxy's core idles
# between requests. --nginx measures nginx in Switchyard's place (run.sh's candidate, one worker);
# --floor-bin PATH the floor (`--example floor-proxy`: the least a tokio HTTP/1.1 proxy does) and
# --textbook-bin PATH the textbook hyper proxy (`--example textbook-proxy`, one worker thread), both
# forwarding to the stable upstream alone. --upstream-h2 has Switchyard speak HTTP/2 to the
# upstreams (`protocol: h2`; the upstream nginx answers h2c with prior knowledge on two more ports):
# the path of gRPC services.
# Needs nginx, wrk and perf (Debian: nginx, wrk, linux-perf); loopback ports only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
DURATION=8
CONNECTIONS=64
TOP=40
BASE_PORT=18500
KEEP=0
PERF=1
BODY_KB=0
RATE=0
NGINX=0
BARE=""
BARE_KIND=""
CONNECTIONS_SET=0
UPSTREAM_H2=0
die() { echo "profile.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --switchyard-bin) SWITCHYARD=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; CONNECTIONS_SET=1; shift 2 ;;
        --top) TOP=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --body-kb) BODY_KB=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-perf) PERF=0; shift ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --nginx) NGINX=1; shift ;;
        --floor-bin) BARE=${2:?}; BARE_KIND=floor; shift 2 ;;
        --textbook-bin) BARE=${2:?}; BARE_KIND=textbook; shift 2 ;;
        --upstream-h2) UPSTREAM_H2=1; shift ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 2 ] && [ "$DURATION" -le 60 ] || die "--duration is 2 to 60 s"
[[ "$BODY_KB" =~ ^[0-9]+$ ]] && [ "$BODY_KB" -le 65536 ] || die "--body-kb is 0 to 65536"
[[ "$RATE" =~ ^[0-9]+$ ]] && [ "$RATE" -le 20000 ] || die "--rate is 0 (closed loop) to 20000"
if [ "$RATE" -gt 0 ] && [ "$CONNECTIONS_SET" = 0 ]; then CONNECTIONS=32; fi
[[ "$CONNECTIONS" =~ ^[0-9]+$ ]] && [ "$CONNECTIONS" -ge 1 ] && [ "$CONNECTIONS" -le 1024 ] || die "--connections is 1 to 1024"
# Each paced connection waits 0 to twice the mean delay, in whole milliseconds (as run.sh).
DELAY_MS=$(( RATE > 0 ? 2 * CONNECTIONS * 1000 / RATE : 0 ))
[ "$RATE" = 0 ] || [ "$DELAY_MS" -ge 10 ] || die "--rate $RATE is too high for $CONNECTIONS paced connections"
PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx wrk taskset $([ "$PERF" = 1 ] && echo perf); do command -v "$tool" >/dev/null || die "missing: $tool"; done
[ -x "$SWITCHYARD" ] || die "no $SWITCHYARD (cargo build --release)"
[ -z "$BARE" ] || [ -x "$BARE" ] || die "no $BARE (cargo build --release --example $BARE_KIND-proxy)"
[ "$UPSTREAM_H2" = 0 ] || { [ "$NGINX" = 0 ] && [ -z "$BARE" ]; } \
    || die "--upstream-h2 measures Switchyard alone (nginx and the bare proxies speak HTTP/1.1 upstream)"

WORK=$(mktemp -d /tmp/switchyard-profile.XXXXXX)
mkdir -p "$WORK/tmp"
# shellcheck source=common.sh
. "$HERE/common.sh"
ports "$BASE_PORT"
fill upstream.conf
fill switchyard.yaml
fill nginx.conf
if [ "$UPSTREAM_H2" = 1 ]; then
    # Two more upstream servers, answering h2c, and Switchyard's versions pointed at them.
    h2_server() {
        printf '    server {\n        listen 127.0.0.1:%s http2 reuseport backlog=4096;\n' "$1"
        printf '        access_log off;\n'
        printf '        location / { add_header x-served-by %s always; return 200 "ok\\n"; }\n    }\n' "$2"
    }
    [ "$(tail -n 1 "$WORK/upstream.conf")" = "}" ] || die "upstream.conf does not end with http's }"
    sed -i '$d' "$WORK/upstream.conf" # the closing brace of http { }
    { h2_server $((STABLE_PORT + 2)) stable; h2_server $((STABLE_PORT + 3)) canary; echo "}"; } \
        >>"$WORK/upstream.conf"
    sed -i -e "s#\"127.0.0.1:$STABLE_PORT\"#\"127.0.0.1:$((STABLE_PORT + 2))\"#" \
        -e "s#\"127.0.0.1:$CANARY_PORT\"#\"127.0.0.1:$((STABLE_PORT + 3))\"#" \
        -e '/endpoints:/a\        protocol: h2' "$WORK/switchyard.yaml"
    [ "$(grep -c 'protocol: h2' "$WORK/switchyard.yaml")" = 2 ] || die "could not point Switchyard at h2c"
fi
if [ "$BODY_KB" -gt 0 ]; then
    head -c "$((BODY_KB * 1024))" /dev/urandom >"$WORK/body.bin"
    sed -i "s#return 200 \"ok\\\\n\";#root $WORK; try_files /body.bin =404;#" "$WORK/upstream.conf"
    grep -q "try_files /body.bin" "$WORK/upstream.conf" || die "could not set the upstream's body"
fi
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "profile.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
taskset -c 1 nginx -p "$WORK" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" -g 'daemon off;' \
    >/dev/null 2>&1 &
PIDS+=("$!")
wait_port "$STABLE_PORT" 10
[ "$UPSTREAM_H2" = 0 ] || wait_port $((STABLE_PORT + 3)) 10
if [ "$NGINX" = 1 ]; then
    NAME="nginx $(nginx -v 2>&1 | sed 's#.*/##')"
    taskset -c 0 nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -g 'daemon off;' \
        >/dev/null 2>&1 &
    PIDS+=("$!")
    PORT=$NGINX_PORT
    wait_port "$PORT" 10
    # The measured process is the worker (the master only starts it).
    SY=$(pgrep -P "$!" | head -n 1)
    [ -n "$SY" ] || die "no nginx worker"
elif [ -n "$BARE" ]; then
    NAME="$BARE_KIND proxy: $BARE"
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$BARE" --listen "127.0.0.1:$SWITCHYARD_PORT" \
        --upstream "127.0.0.1:$STABLE_PORT" --max-seconds 600 >"$WORK/bare.out" 2>&1 &
    SY=$!
    PIDS+=("$SY")
    PORT=$SWITCHYARD_PORT
    wait_port "$PORT" 10
else
    NAME="Switchyard: $SWITCHYARD"
    SWITCHYARD_WORKER_THREADS=1 RUST_LOG=warn taskset -c 0 "$SWITCHYARD" run --config "$WORK/switchyard.yaml" \
        >"$WORK/switchyard.out" 2>&1 &
    SY=$!
    PIDS+=("$SY")
    PORT=$SWITCHYARD_PORT
    wait_port "$PORT" 10
fi
URL="http://127.0.0.1:$PORT/"
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d3s "$URL" >/dev/null # warm-up
# A paced run waits before each request (run.sh's fixed-rate Lua delay); latency from the send.
PACE=()
if [ "$RATE" -gt 0 ]; then
    echo "delay = function() return math.random(0, $DELAY_MS) end" >"$WORK/paced.lua"
    PACE=(--latency -s "$WORK/paced.lua")
fi
ticks() { awk '{ print $14, $15 }' "/proc/$SY/stat"; }
read -r u0 s0 < <(ticks)
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$((DURATION + 1))s" "${PACE[@]}" "$URL" >"$WORK/wrk.txt" &
WRK=$!
sleep 0.5
if [ "$PERF" = 1 ]; then
    perf record -q -e cpu-clock -F 4000 -p "$SY" -o "$WORK/perf.data" -- sleep "$DURATION" 2>/dev/null
fi
wait "$WRK"
read -r u1 s1 < <(ticks)
requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.txt")
hz=$(getconf CLK_TCK)
echo "$NAME"
grep -E "Requests/sec|requests in|^ +99%" "$WORK/wrk.txt"
awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$requests" -v hz="$hz" 'BEGIN {
    printf "CPU per request (warm-up excluded, whole wrk run): user %.1f us + sys %.1f us = %.1f us\n",
        u * 1e6 / hz / n, s * 1e6 / hz / n, (u + s) * 1e6 / hz / n }'
[ "$PERF" = 1 ] || exit 0
echo
echo "Hottest symbols, self time (perf record -e cpu-clock -F 4000, $DURATION s):"
perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -n "$TOP"
