#!/usr/bin/env bash
# Several workers: Switchyard's default (tokio's work-stealing scheduler, one accept loop per
# listener) against `run --reuse-port` (one SO_REUSEPORT socket, accept loop and single-threaded
# runtime per worker), with nginx (worker_processes N, `listen ... reuseport`) beside them.
# Closed loop (wrk), the candidates alternated over rounds (A B C, then C B A, ...).
#
# Nothing is pinned: on a 2-core machine the proxies' workers share both cores with wrk and the
# upstream, the same for every candidate. The figures compare the candidates with each other in
# one run; they say little about what one many-core machine would do.
#
# Usage: loadtest/compare/workers.sh [--workers N] [--rounds N] [--duration S] [--connections N]
#          [--switchyard-bin PATH] [--base-port P]
# Prints one line per measurement and a summary: requests/s and CPU per request (the proxy's
# processes, user + system) per candidate, the medians of the rounds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORKERS=2
ROUNDS=3
DURATION=10
CONNECTIONS=128
BASE_PORT=18600
SWITCHYARD_BIN=$ROOT/target/release/switchyard

die() { echo "workers.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --switchyard-bin) SWITCHYARD_BIN=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
for n in WORKERS ROUNDS DURATION CONNECTIONS; do
    [[ "${!n}" =~ ^[0-9]+$ ]] && [ "${!n}" -ge 1 ] && [ "${!n}" -le 1000 ] || die "$n must be 1 to 1000"
done
[ "$DURATION" -le 120 ] || die "--duration is at most 120 s"
[ "$ROUNDS" -le 10 ] || die "--rounds is at most 10"
[ -x "$SWITCHYARD_BIN" ] || die "no $SWITCHYARD_BIN (cargo build --release, or --switchyard-bin)"
for tool in nginx wrk python3; do command -v "$tool" >/dev/null || die "needs $tool"; done

WORK=$(mktemp -d /tmp/switchyard-workers.XXXXXX)
mkdir -p "$WORK/tmp"
# shellcheck source=common.sh
. "$HERE/common.sh"
ports "$BASE_PORT"
REUSE_PORT=$((SWITCHYARD_PORT + 1))
fill upstream.conf
fill nginx.conf
fill switchyard.yaml
sed -i -e "s/^worker_processes 1;/worker_processes $WORKERS;/" \
    -e "s/listen 127.0.0.1:$NGINX_PORT /listen 127.0.0.1:$NGINX_PORT reuseport /" "$WORK/nginx.conf"
sed -e "s/127.0.0.1:$SWITCHYARD_PORT/127.0.0.1:$REUSE_PORT/" "$WORK/switchyard.yaml" >"$WORK/reuse.yaml"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The upstream: one nginx worker per core so that it is not the limit.
sed -i "s/^worker_processes 1;/worker_processes $WORKERS;/" "$WORK/upstream.conf"
nginx -p "$WORK" -e "$WORK/up.err" -c "$WORK/upstream.conf" -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)
nginx -p "$WORK" -e "$WORK/ng.err" -c "$WORK/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
NGINX_PID=$!; PIDS+=($!)
RUST_LOG=warn "$SWITCHYARD_BIN" run --config "$WORK/switchyard.yaml" --worker-threads "$WORKERS" \
    >"$WORK/shared.out" 2>&1 &
SHARED_PID=$!; PIDS+=($!)
RUST_LOG=warn "$SWITCHYARD_BIN" run --config "$WORK/reuse.yaml" --worker-threads "$WORKERS" \
    --reuse-port >"$WORK/reuse.out" 2>&1 &
REUSE_PID=$!; PIDS+=($!)
for p in $STABLE_PORT $CANARY_PORT $NGINX_PORT $SWITCHYARD_PORT $REUSE_PORT; do wait_port "$p" 10; done

# ticks PID...: user + system clock ticks of the processes (nginx: the master and its workers).
ticks() {
    local sum=0 pid t
    for pid in "$@"; do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        sum=$((sum + t))
    done
    echo "$sum"
}
pids_of() {
    case "$1" in
        nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" | tr '\n' ' ') ;;
        shared) echo "$SHARED_PID" ;;
        reuse-port) echo "$REUSE_PID" ;;
    esac
}
url_of() {
    case "$1" in
        nginx) echo "http://127.0.0.1:$NGINX_PORT/" ;;
        shared) echo "http://127.0.0.1:$SWITCHYARD_PORT/" ;;
        reuse-port) echo "http://127.0.0.1:$REUSE_PORT/" ;;
    esac
}
HZ=$(getconf CLK_TCK)
measure() { # candidate round
    local c=$1 pids t0 t1 out req
    pids=$(pids_of "$c")
    # shellcheck disable=SC2086
    t0=$(ticks $pids)
    out=$(wrk -t"$WORKERS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$(url_of "$c")" 2>&1)
    # shellcheck disable=SC2086
    t1=$(ticks $pids)
    req=$(awk '/requests in/ { print $1 }' <<<"$out")
    local p99; p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    [ -n "$req" ] && [ "$req" -gt 0 ] || die "wrk gave no result for $c: $out"
    awk -v c="$c" -v r="$2" -v req="$req" -v d="$DURATION" -v t=$((t1 - t0)) -v hz="$HZ" -v p99="$p99" \
        'BEGIN { printf "%s round %d: %.0f req/s, %.1f us CPU per request, p99 %s\n", c, r, req / d, t / hz / req * 1e6, p99 }'
}

for c in nginx shared reuse-port; do wrk -t"$WORKERS" -c"$CONNECTIONS" -d3s "$(url_of "$c")" >/dev/null 2>&1; done
echo "workers.sh: $WORKERS workers each, wrk -t$WORKERS -c$CONNECTIONS, ${DURATION}s, $((2 * ROUNDS)) rounds, $(date -u +%FT%TZ)"
for ((r = 1; r <= 2 * ROUNDS; r++)); do
    if ((r % 2)); then order="nginx shared reuse-port"; else order="reuse-port shared nginx"; fi
    for c in $order; do measure "$c" "$r"; done
done | tee "$WORK/lines.txt"
python3 - "$WORK/lines.txt" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) round (\d+): (\d+) req/s, ([\d.]+) us", line)
    if m:
        rows.setdefault(m[1], []).append((int(m[3]), float(m[4])))
ng = rows.get("nginx")
for c, v in rows.items():
    rps = statistics.median(r for r, _ in v)
    cpu = statistics.median(u for _, u in v)
    rel = ""
    if ng:
        rel = " (%.2fx nginx's req/s, %.2fx its CPU per request)" % (
            rps / statistics.median(r for r, _ in ng), cpu / statistics.median(u for _, u in ng))
    print(f"{c}: {rps:.0f} req/s, {cpu:.1f} us CPU per request{rel}")
EOF
