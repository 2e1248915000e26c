#!/usr/bin/env bash
# CPU per request over TLS, for an A/B of Switchyard builds: each binary in turn behind run.sh's
# upstream with a TLS listener (certs-dev/'s localhost certificate), the proxy pinned to one core and
# wrk (which speaks TLS) to the other; per binary and round, wrk on 32 kept connections, then on 8
# connections that close after each request (a full handshake per request). Reports requests and
# the proxy's CPU time per request (user + system, from /proc). Rounds alternate the binaries.
#
# Usage: loadtest/compare/tls.sh [--rounds N] [--duration S] [--base-port P] BINARY [BINARY ...]
# Needs nginx, wrk and taskset; loopback ports only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=3
DURATION=6
BASE_PORT=18800
die() { echo "tls.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown argument: $1" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || die "name at least one binary"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "--rounds is 1 to 20"
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] && [ "$DURATION" -le 60 ] || die "--duration is 1 to 60"
PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx wrk taskset; do command -v "$tool" >/dev/null || die "missing: $tool"; done
for bin in "$@"; do [ -x "$bin" ] || die "not an executable: $bin"; done

WORK=$(mktemp -d /tmp/switchyard-tls.XXXXXX)
mkdir -p "$WORK/tmp"
# shellcheck source=common.sh
. "$HERE/common.sh"
ports "$BASE_PORT"
fill upstream.conf
UPSTREAM=""
PROXY=""
cleanup() {
    [ -n "$PROXY" ] && kill -TERM "$PROXY" 2>/dev/null && wait "$PROXY" 2>/dev/null
    [ -n "$UPSTREAM" ] && kill -TERM "$UPSTREAM" 2>/dev/null && wait "$UPSTREAM" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
taskset -c 1 nginx -p "$WORK" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" -g 'daemon off;' &
UPSTREAM=$!
wait_port "$STABLE_PORT" 30
cat >"$WORK/switchyard.yaml" <<EOF
listeners:
  - name: https
    addr: "127.0.0.1:$SWITCHYARD_PORT"
    tls:
      certificates:
        - cert: $ROOT/certs-dev/localhost.crt
          key: $ROOT/certs-dev/localhost.key
access_log: { enabled: false }
routes:
  - name: shop
    versions:
      - { name: stable, endpoints: ["127.0.0.1:$STABLE_PORT"], weight: 90 }
      - { name: canary, endpoints: ["127.0.0.1:$CANARY_PORT"], weight: 10 }
EOF

ticks() { awk '{ print $14 + $15 }' "/proc/$PROXY/stat"; }
# wrk's request count for $DURATION seconds on $1 connections, with extra arguments.
load() {
    local connections=$1; shift
    taskset -c 1 wrk -t1 -c"$connections" -d"${DURATION}s" "$@" "https://127.0.0.1:$SWITCHYARD_PORT/" \
        | awk '/requests in/ { print $1 }'
}
per_request() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }

echo "| round | binary | kept: requests | kept: CPU µs per request | a handshake each: requests | CPU µs per request |"
echo "|---|---|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
    order=("$@")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done
    fi
    for bin in "${order[@]}"; do
        SWITCHYARD_WORKER_THREADS=1 taskset -c 0 "$bin" run --config "$WORK/switchyard.yaml" >"$WORK/proxy.out" 2>&1 &
        PROXY=$!
        wait_port "$SWITCHYARD_PORT" 30
        t0=$(ticks); kept=$(load 32)
        t1=$(ticks); each=$(load 8 -H "Connection: close")
        t2=$(ticks)
        kill -TERM "$PROXY"; wait "$PROXY" || true
        PROXY=""
        echo "| $round | $bin | $kept | $(per_request $((t1 - t0)) "$kept") | $each | $(per_request $((t2 - t1)) "$each") |"
    done
done
