#!/usr/bin/env bash
# Instructions per request in Switchyard's process (user space), counted by valgrind: a figure that
# does not drift with the machine's load, for the A/B of a change whose effect is below the noise of
# CPU time. Runs the binary under `valgrind --tool=callgrind` behind run.sh's upstream config, sends
# N and 3N requests over 8 keep-alive connections (a Python client, one request at a time on each),
# and reports (I(3N) - I(N)) / 2N, which cancels start-up and shutdown. Also reports the task polls
# per request (tokio's `raw::poll` calls, same difference). memcpy counts one instruction per byte
# under valgrind (`rep movsb`), so moved bytes weigh more here than in CPU time.
#
# Usage: loadtest/compare/instructions.sh [--switchyard-bin PATH] [--requests N] [--base-port P]
#          [--keep]
# Needs valgrind, nginx and python3; loopback ports only. Takes about a minute.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
REQUESTS=800
BASE_PORT=18600
KEEP=0
die() { echo "instructions.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --switchyard-bin) SWITCHYARD=${2:?}; shift 2 ;;
        --requests) REQUESTS=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$REQUESTS" =~ ^[0-9]+$ ]] && [ "$REQUESTS" -ge 80 ] && [ "$REQUESTS" -le 20000 ] || die "--requests is 80 to 20000"
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
cat >"$WORK/client.py" <<'EOF'
import http.client, sys, threading
port, n, c = int(sys.argv[1]), int(sys.argv[2]), 8
failed = []
def run(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(k):
        conn.request("GET", "/")
        r = conn.getresponse(); r.read()
        if r.status != 200: failed.append(r.status)
threads = [threading.Thread(target=run, args=(n // c,)) for _ in range(c)]
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

# Prints "instructions task-polls" for one run of $1 requests.
count() {
    local out="$WORK/callgrind.$1"
    SWITCHYARD_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$SWITCHYARD" run --config "$WORK/switchyard.yaml" >"$WORK/switchyard.$1.out" 2>&1 &
    local pid=$!
    wait_port "$SWITCHYARD_PORT" 30
    python3 "$WORK/client.py" "$SWITCHYARD_PORT" "$1" || die "requests failed (see $WORK)"
    kill -TERM "$pid"
    wait "$pid" || true
    local total polls
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
    # Calls of tokio's Harness::poll (one per task poll): the caller lines of its sections.
    polls=$(callgrind_annotate --tree=caller "$out" 2>/dev/null | awk '
        /^[[:space:]]*$/ { calls = 0; next }
        /[[:space:]]< / { line = $0; gsub(",", "", line); if (match(line, /\([0-9]+x\)/)) calls += substr(line, RSTART + 1, RLENGTH - 3) + 0; next }
        /[[:space:]]\*  .*tokio::runtime::task::harness::Harness<T,S>::poll / { n += calls }
        END { print n + 0 }')
    echo "$total $polls"
}
read -r i1 p1 < <(count "$REQUESTS")
read -r i3 p3 < <(count $((REQUESTS * 3)))
echo "Switchyard: $SWITCHYARD"
awk -v i1="$i1" -v i3="$i3" -v p1="$p1" -v p3="$p3" -v n="$REQUESTS" 'BEGIN {
    printf "instructions per request: %.0f\ntask polls per request: %.2f\n", (i3 - i1) / (2 * n), (p3 - p1) / (2 * n) }'
