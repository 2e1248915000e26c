#!/usr/bin/env bash
# Instructions per request in Switchyard's process (user space), counted by valgrind: a figure that
# does not drift with the machine's load, for the A/B of a change whose effect is below the noise of
# CPU time. Runs the binary under `valgrind --tool=callgrind` behind run.sh's upstream config, sends
# N and 3N requests over 8 keep-alive connections (a Python client, one request at a time on each),
# and reports (I(3N) - I(N)) / 2N, which cancels start-up and shutdown. Also reports the task polls
# per request (tokio's `raw::poll` calls, same difference). memcpy counts one instruction per byte
# under valgrind (`rep movsb`), so moved bytes weigh more here than in CPU time.
#
# --nginx counts nginx too, as run.sh's candidate (one worker, `master_process off`), under the same
# client: the same harness for both. --cache adds a run of each under `valgrind --tool=cachegrind`
# with this machine's first-level caches simulated (32 KiB, 8-way, 64-byte lines, instruction and
# data; a 1 MiB last level standing for the per-core L2) and reports their misses per request: how
# much code and data a request touches beyond what stays cached between requests. Without the
# kernel, which runs between every two system calls and evicts much more, these are lower bounds.
# --footprint records the callgrind runs per instruction (`--dump-instr=yes`) and reports the code
# every request runs through (footprint.py): 64-byte lines and 4 KB pages, by object and crate. On a
# core that idles between requests, that code comes back from L2 or further on each request.
#
# --body N sends POSTs with an N-byte body (head and body in one write) instead of GETs;
# --no-fast-path serves Switchyard's listener with hyper's server (`fast_path: false`), for the
# A/B of the fast path itself.
#
# Usage: loadtest/compare/instructions.sh [--switchyard-bin PATH] [--requests N] [--base-port P]
#          [--nginx] [--cache] [--footprint] [--body N] [--no-fast-path] [--keep]
# Needs valgrind, nginx and python3; loopback ports only. Takes about a minute per candidate and
# tool.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
REQUESTS=800
BASE_PORT=18600
KEEP=0
NGINX=0
CACHE=0
FOOTPRINT=0
BODY=0
FAST_PATH=1
die() { echo "instructions.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --switchyard-bin) SWITCHYARD=${2:?}; shift 2 ;;
        --requests) REQUESTS=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --nginx) NGINX=1; shift ;;
        --cache) CACHE=1; shift ;;
        --footprint) FOOTPRINT=1; shift ;;
        --body) BODY=${2:?}; shift 2 ;;
        --no-fast-path) FAST_PATH=0; shift ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$REQUESTS" =~ ^[0-9]+$ ]] && [ "$REQUESTS" -ge 80 ] && [ "$REQUESTS" -le 20000 ] || die "--requests is 80 to 20000"
[[ "$BODY" =~ ^[0-9]+$ ]] && [ "$BODY" -le 65536 ] || die "--body is 0 to 65536 bytes"
PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx valgrind callgrind_annotate python3; do command -v "$tool" >/dev/null || die "missing: $tool"; done
[ -x "$SWITCHYARD" ] || die "no $SWITCHYARD (cargo build --release)"

WORK=$(mktemp -d /tmp/switchyard-instructions.XXXXXX)
mkdir -p "$WORK/tmp"
# shellcheck source=common.sh
. "$HERE/common.sh"
ports "$BASE_PORT"
fill upstream.conf
fill switchyard.yaml
if [ "$FAST_PATH" = 0 ]; then
    sed -i 's#^\(    addr: .*\)$#\1\n    fast_path: false#' "$WORK/switchyard.yaml"
    grep -q "fast_path: false" "$WORK/switchyard.yaml" || die "cannot turn the fast path off in switchyard.yaml"
fi
fill nginx.conf
cat >"$WORK/client.py" <<'EOF'
import http.client, socket, sys, threading
port, n, body, c = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), 8
post = (b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % body) + b"x" * body
failed = []
def run(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(k):
        conn.request("GET", "/")
        r = conn.getresponse(); r.read()
        if r.status != 200: failed.append(r.status)
def run_posts(k):
    # The head and the body in one send() (http.client sends them apart, and a proxy may read
    # the head alone).
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    for _ in range(k):
        sock.sendall(post)
        r = http.client.HTTPResponse(sock); r.begin(); r.read()
        if r.status != 200: failed.append(r.status)
threads = [threading.Thread(target=run_posts if body else run, args=(n // c,)) for _ in range(c)]
[t.start() for t in threads]; [t.join() for t in threads]
sys.exit(1 if failed else 0)
EOF
UPSTREAM=""
cleanup() {
    [ -n "$UPSTREAM" ] && kill -TERM "$UPSTREAM" 2>/dev/null && wait "$UPSTREAM" 2>/dev/null
    if [ "$KEEP" = 1 ]; then echo "instructions.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
nginx -p "$WORK" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" -g 'daemon off;' >/dev/null 2>&1 &
UPSTREAM=$!
wait_port "$STABLE_PORT" 30

# Runs candidate $1 (switchyard or nginx) under valgrind tool $2 (callgrind or cachegrind) for $3
# requests; its output file is $WORK/$2.$1.$3.
run_under() {
    local who=$1 tool=$2 n=$3 out="$WORK/$2.$1.$3" port pid
    local valgrind=(valgrind --tool="$tool" "--$tool-out-file=$out")
    if [ "$tool" = cachegrind ]; then
        valgrind+=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64)
    elif [ "$FOOTPRINT" = 1 ]; then
        valgrind+=(--dump-instr=yes --compress-pos=no --compress-strings=no)
    fi
    if [ "$who" = nginx ]; then
        "${valgrind[@]}" nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" \
            -g 'daemon off; master_process off;' >"$WORK/nginx.$tool.$n.out" 2>&1 &
        pid=$!
        port=$NGINX_PORT
    else
        SWITCHYARD_WORKER_THREADS=1 RUST_LOG=warn "${valgrind[@]}" \
            "$SWITCHYARD" run --config "$WORK/switchyard.yaml" >"$WORK/switchyard.$tool.$n.out" 2>&1 &
        pid=$!
        port=$SWITCHYARD_PORT
    fi
    wait_port "$port" 60
    python3 "$WORK/client.py" "$port" "$n" "$BODY" || die "requests to $who failed (see $WORK)"
    # nginx finishes its open connections on QUIT, as Switchyard drains on TERM.
    if [ "$who" = nginx ]; then kill -QUIT "$pid"; else kill -TERM "$pid"; fi
    wait "$pid" || true
}

# The events of a valgrind output file's summary line, as "name=value ...".
events() {
    awk '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
        /^(summary|totals):/ { for (i = 2; i <= NF; i++) printf "%s=%s ", name[i], $i; exit }' "$1"
}

# Calls of tokio's Harness::poll (one per task poll) in a callgrind file: its caller lines.
task_polls() {
    callgrind_annotate --tree=caller "$1" 2>/dev/null | awk '
        /^[[:space:]]*$/ { calls = 0; next }
        /[[:space:]]< / { line = $0; gsub(",", "", line); if (match(line, /\([0-9]+x\)/)) calls += substr(line, RSTART + 1, RLENGTH - 3) + 0; next }
        /[[:space:]]\*  .*tokio::runtime::task::harness::Harness<T,S>::poll / { n += calls }
        END { print n + 0 }'
}

# Per-request figures of candidate $1 under tool $2: the difference of a run of 3N and one of N.
measure() {
    local who=$1 tool=$2 n=$REQUESTS
    run_under "$who" "$tool" "$n"
    run_under "$who" "$tool" $((n * 3))
    local one three
    one=$(events "$WORK/$tool.$who.$n")
    three=$(events "$WORK/$tool.$who.$((n * 3))")
    awk -v one="$one" -v three="$three" -v n="$n" -v who="$who" -v tool="$tool" 'BEGIN {
        split(one, a, " "); split(three, b, " ")
        for (i in a) { split(a[i], x, "="); split(b[i], y, "="); d[x[1]] = (y[2] - x[2]) / (2 * n) }
        if (tool == "callgrind") printf "%s: instructions per request: %.0f\n", who, d["Ir"]
        else printf "%s: per request: instructions %.0f, I1 misses %.0f, D1 misses %.0f (read %.0f, write %.0f)\n",
            who, d["Ir"], d["I1mr"], d["D1mr"] + d["D1mw"], d["D1mr"], d["D1mw"] }'
    if [ "$FOOTPRINT" = 1 ] && [ "$tool" = callgrind ]; then
        echo "$who: $(python3 -B "$HERE/footprint.py" "$WORK/$tool.$who.$n" "$WORK/$tool.$who.$((n * 3))" "$n")"
    fi
    if [ "$who" = switchyard ] && [ "$tool" = callgrind ]; then
        local p1 p3
        p1=$(task_polls "$WORK/$tool.$who.$n")
        p3=$(task_polls "$WORK/$tool.$who.$((n * 3))")
        # Every request wakes a task at least once: fewer counted calls mean the build inlined
        # Harness::poll (a profile-guided build does), and the count says nothing.
        awk -v p1="$p1" -v p3="$p3" -v n="$n" 'BEGIN { polls = (p3 - p1) / (2 * n)
            if (polls < 1) print "switchyard: task polls per request: not countable (Harness::poll is inlined in this build)"
            else printf "switchyard: task polls per request: %.2f\n", polls }'
    fi
}

echo "Switchyard: $SWITCHYARD"
candidates=(switchyard)
[ "$NGINX" = 1 ] && candidates+=(nginx)
tools=(callgrind)
[ "$CACHE" = 1 ] && tools+=(cachegrind)
for tool in "${tools[@]}"; do
    for who in "${candidates[@]}"; do measure "$who" "$tool"; done
done
