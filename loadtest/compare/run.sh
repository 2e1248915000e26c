#!/usr/bin/env bash
# Side-by-side benchmark: the upstream alone (the limit), nginx, HAProxy and Switchyard, each as a
# 90/10 splitting reverse proxy with one worker, measured in one run with the candidates
# alternated over rounds (A B C D, then D C B A, ...) so that drift cancels in same-round ratios.
#
# Layout on a 2-core machine: the proxy under test is pinned to one core (--proxy-cpu, default 0);
# the load generator and the upstream are pinned to the other (--load-cpu, default 1).
#
# Usage: loadtest/compare/run.sh [--rounds N] [--duration S] [--connections N] [--rate R]
#          [--rate-duration S] [--rate-rounds N] [--rate-connections N] [--rate-tool wrk|switchyard-load]
#          [--warmup S] [--quiet-wait S] [--redo N] [--proxy-cpu N] [--load-cpu N] [--base-port P]
#          [--candidates "direct nginx haproxy switchyard"] [--switchyard-bin PATH] [--no-build]
#          [--pgo] [--no-install] [--out FILE] [--keep]
# --pgo builds Switchyard with loadtest/pgo.sh (profile-guided) and measures that binary.
# Every flag also has an environment variable (ROUNDS, DURATION, CONNECTIONS, RATE, RATE_DURATION,
# RATE_ROUNDS, RATE_CONNECTIONS, RATE_TOOL, WARMUP, QUIET_WAIT, REDO, PROXY_CPU, LOAD_CPU, BASE_PORT,
# CANDIDATES, SWITCHYARD_BIN). See README.md beside this file.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
COMMAND_LINE=$(printf '%q ' "$0" "$@")
COMMAND_LINE=${COMMAND_LINE% }

ROUNDS=${ROUNDS:-3}                 # passes in each direction: 3 -> 6 closed-loop rounds per candidate
DURATION=${DURATION:-10}            # seconds per closed-loop round
CONNECTIONS=${CONNECTIONS:-64}      # closed-loop concurrency (wrk connections)
RATE=${RATE:-2000}                  # fixed rate for the latency comparison, requests/s
RATE_DURATION=${RATE_DURATION:-10}  # seconds per fixed-rate run
RATE_ROUNDS=${RATE_ROUNDS:-3}       # fixed-rate passes in each direction: 3 -> 6 runs per candidate
RATE_CONNECTIONS=${RATE_CONNECTIONS:-32}
RATE_TOOL=${RATE_TOOL:-wrk}         # wrk (paced by a Lua delay) or switchyard-load (open loop)
WARMUP=${WARMUP:-3}                 # seconds of unmeasured load per candidate before the rounds
QUIET_WAIT=${QUIET_WAIT:-60}        # seconds, in all, to wait for other processes to calm down
QUIET=0.15                          # other processes' CPU (in cores) below which a pause is quiet
REDO=${REDO:-3}                     # disturbed rounds run again, at most this many times in all
DISTURBED_PCT=10                    # other processes' CPU, in % of a core, that marks a disturbed round
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18400}
CANDIDATES=${CANDIDATES:-"direct nginx haproxy switchyard"}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-}   # a given binary instead of this checkout's release build
BUILD=1
PGO=0
INSTALL=1
OUT=""
KEEP=0
MAX_TOTAL_SECONDS=900               # no new round after this long measuring; a summary is still printed

die() { echo "run.sh: $*" >&2; exit 2; }
note() { echo "run.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --rate-duration) RATE_DURATION=${2:?}; shift 2 ;;
        --rate-rounds) RATE_ROUNDS=${2:?}; shift 2 ;;
        --rate-connections) RATE_CONNECTIONS=${2:?}; shift 2 ;;
        --rate-tool) RATE_TOOL=${2:?}; shift 2 ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
        --redo) REDO=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --proxy-cpu) PROXY_CPU=${2:?}; shift 2 ;;
        --load-cpu) LOAD_CPU=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --candidates) CANDIDATES=${2:?}; shift 2 ;;
        --switchyard-bin) SWITCHYARD_BIN=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --pgo) PGO=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        --out) OUT=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

int_in() { # name value min max
    [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a whole number, got '$2'"
    [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || die "$1 must be between $3 and $4, got $2"
}
int_in rounds "$ROUNDS" 1 10
int_in duration "$DURATION" 2 120
int_in connections "$CONNECTIONS" 1 4096
int_in rate "$RATE" 1 200000
int_in rate-duration "$RATE_DURATION" 0 120
int_in rate-rounds "$RATE_ROUNDS" 0 5
int_in rate-connections "$RATE_CONNECTIONS" 1 4096
int_in warmup "$WARMUP" 0 30
int_in quiet-wait "$QUIET_WAIT" 0 600
int_in redo "$REDO" 0 20
case "$RATE_TOOL" in wrk|switchyard-load) ;; *) die "--rate-tool is wrk or switchyard-load" ;; esac
# wrk paces each connection by a whole number of milliseconds, drawn uniformly from 0 to twice the
# mean: the mean must be a few milliseconds for the rate to come out right.
RATE_DELAY_MS=$((2 * RATE_CONNECTIONS * 1000 / RATE))
if [ "$RATE_TOOL" = wrk ] && [ "$RATE_DURATION" -gt 0 ] && [ "$RATE_DELAY_MS" -lt 10 ]; then
    die "--rate $RATE is too high for $RATE_CONNECTIONS paced connections; raise --rate-connections to at least $((RATE / 200 + 1))"
fi
int_in proxy-cpu "$PROXY_CPU" 0 1023
int_in load-cpu "$LOAD_CPU" 0 1023
int_in base-port "$BASE_PORT" 1024 65000
[ "$PROXY_CPU" != "$LOAD_CPU" ] || die "--proxy-cpu and --load-cpu must differ"
for c in $CANDIDATES; do
    case "$c" in direct|nginx|haproxy|switchyard) ;; *) die "unknown candidate '$c'" ;; esac
done
[[ " $CANDIDATES " == *" nginx "* ]] || die "nginx must be a candidate: every ratio is to nginx"
NCPU=$(nproc)
[ "$PROXY_CPU" -lt "$NCPU" ] && [ "$LOAD_CPU" -lt "$NCPU" ] || die "this machine has $NCPU CPUs"

# ---------------------------------------------------------------------------------------------
# Tools: nginx, HAProxy and wrk from Debian packages when missing; python3 for the summary.
PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
command -v taskset >/dev/null || missing+=(util-linux)
command -v pgrep >/dev/null || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing: ${missing[*]} (and --no-install given)"
    [ "$(id -u)" = 0 ] || die "missing: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
    note "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged services; they would compete for the CPUs. Stop them (only them).
    for svc in nginx haproxy; do
        if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null; then
            systemctl stop "$svc" 2>/dev/null || true
        fi
    done
fi

# ---------------------------------------------------------------------------------------------
# Build.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$PGO" = 1 ]; then
    [ "$BUILD" = 1 ] && [ -z "$SWITCHYARD_BIN" ] || die "--pgo builds the binary: without --no-build or --switchyard-bin"
    note "building switchyard (release, profile-guided: loadtest/pgo.sh)"
    "$ROOT/loadtest/pgo.sh" --out "$TARGET_DIR/pgo/switchyard" >&2
    SWITCHYARD_BIN=$TARGET_DIR/pgo/switchyard
elif [ "$BUILD" = 1 ] && [ -z "$SWITCHYARD_BIN" ]; then
    note "building switchyard (release)"
    (cd "$ROOT" && cargo build --release --quiet -p switchyard --bin switchyard)
fi
if [ "$BUILD" = 1 ] && [ "$RATE_TOOL" = switchyard-load ]; then
    note "building switchyard-load (release)"
    (cd "$ROOT" && cargo build --release --quiet -p switchyard-loadtest --bin switchyard-load)
fi
SWITCHYARD=${SWITCHYARD_BIN:-$TARGET_DIR/release/switchyard}
LOADGEN=$TARGET_DIR/release/switchyard-load
[ -x "$SWITCHYARD" ] || die "no $SWITCHYARD (build it, or drop --no-build)"
[ "$RATE_TOOL" != switchyard-load ] || [ -x "$LOADGEN" ] || die "no $LOADGEN (build it, or drop --no-build)"

# ---------------------------------------------------------------------------------------------
# Work directory, ports, configs.
WORK=$(mktemp -d /tmp/switchyard-compare.XXXXXX)
mkdir -p "$WORK/tmp" "$WORK/raw"
# shellcheck source=common.sh
. "$HERE/common.sh"
ports "$BASE_PORT"
for p in $STABLE_PORT $CANARY_PORT $NGINX_PORT $HAPROXY_PORT $SWITCHYARD_PORT; do
    if ss -Htln "sport = :$p" | grep -q .; then die "port $p is in use; pick another --base-port"; fi
done

fill upstream.conf
fill nginx.conf
fill haproxy.cfg
fill switchyard.yaml
cat >"$WORK/report.lua" <<'EOF'
-- Only done(): no per-request Lua, so wrk runs at full speed.
done = function(summary, latency, requests)
  local e = summary.errors
  local f = math.floor
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    f(latency:percentile(50)), f(latency:percentile(90)), f(latency:percentile(99)),
    f(latency:percentile(99.9)), f(latency.max), f(latency.mean)))
end
EOF
{
    echo "-- Paced: each connection waits a whole number of ms, uniform in [0, $RATE_DELAY_MS], before"
    echo "-- each request: about $RATE req/s over $RATE_CONNECTIONS connections, latency from the send."
    echo "delay = function() return math.random(0, $RATE_DELAY_MS) end"
    cat "$WORK/report.lua"
} >"$WORK/paced.lua"

# ---------------------------------------------------------------------------------------------
# Processes: every pid this script starts is recorded and ended on exit, by pid.
STARTED=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 30); do
        local alive=0 st
        for pid in "${STARTED[@]}"; do
            st=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)
            if [ -n "$st" ] && [ "$st" != Z ]; then alive=1; fi
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then note "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_listening() { # port pid name: like common.sh's wait_port, and dies if pid exits
    for _ in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || die "$3 exited at start (see $WORK/$3.err)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$3 did not listen on port $1 within 10 s"
}

taskset -c "$LOAD_CPU" nginx -p "$WORK" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" \
    -g 'daemon off;' >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
UPSTREAM_PID=$!; STARTED+=("$UPSTREAM_PID")
wait_listening "$STABLE_PORT" "$UPSTREAM_PID" upstream
wait_listening "$CANARY_PORT" "$UPSTREAM_PID" upstream

declare -A PID URL
URL[direct]="http://127.0.0.1:$STABLE_PORT/"
for c in $CANDIDATES; do
    case "$c" in
        direct) PID[direct]="" ;;
        nginx)
            taskset -c "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" \
                -g 'daemon off;' >"$WORK/nginx.out" 2>"$WORK/nginx.err" &
            PID[nginx]=$!; STARTED+=("$!"); URL[nginx]="http://127.0.0.1:$NGINX_PORT/"
            wait_listening "$NGINX_PORT" "${PID[nginx]}" nginx ;;
        haproxy)
            taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" \
                >"$WORK/haproxy.out" 2>"$WORK/haproxy.err" &
            PID[haproxy]=$!; STARTED+=("$!"); URL[haproxy]="http://127.0.0.1:$HAPROXY_PORT/"
            wait_listening "$HAPROXY_PORT" "${PID[haproxy]}" haproxy ;;
        switchyard)
            # One worker thread: --worker-threads's variable on newer builds, tokio's own on older.
            SWITCHYARD_WORKER_THREADS=1 TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$PROXY_CPU" "$SWITCHYARD" run \
                --config "$WORK/switchyard.yaml" >"$WORK/switchyard.out" 2>"$WORK/switchyard.err" &
            PID[switchyard]=$!; STARTED+=("$!"); URL[switchyard]="http://127.0.0.1:$SWITCHYARD_PORT/"
            wait_listening "$SWITCHYARD_PORT" "${PID[switchyard]}" switchyard ;;
    esac
done

# Each proxy must answer 200 from the upstream before anything is measured.
for c in $CANDIDATES; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${URL[$c]}" || true)
    [ "$code" = 200 ] || die "$c answered '$code' instead of 200 at ${URL[$c]}"
done

# ---------------------------------------------------------------------------------------------
# Measuring helpers.
CLK_TCK=$(getconf CLK_TCK)

pids_of() { # candidate -> its processes (nginx: master and workers)
    local main=${PID[$1]:-}
    [ -n "$main" ] || return 0
    echo "$main"
    pgrep -P "$main" || true
}
ticks_of() { # pids... -> user+sys clock ticks summed over every thread of each process
    local total=0 s f
    for p in "$@"; do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }
        read -ra f <<<"$s"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
core_ticks() { # cpu -> "busy total steal" ticks since boot
    awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 + $9, $9 }' /proc/stat
}
hits() { # port name -> lines the upstream has logged for it
    local n
    n=$(wc -l <"$WORK/$1.hits" 2>/dev/null) || n=0
    echo "${n:-0}"
}
now() { date +%s.%N; }

UP_PIDS=$({ echo "$UPSTREAM_PID"; pgrep -P "$UPSTREAM_PID" || true; } | tr '\n' ' ')
RESULTS=$WORK/rounds.jsonl
: >"$RESULTS"
T_START=$(date +%s)

# Other processes (a compiler, a test run) disturb a round. Before each one, with everything of
# ours idle, wait until the machine is quiet, within a budget for the whole run.
QUIET_LEFT=$QUIET_WAIT
wait_quiet() { # sleeps at least 1.2 s (the upstream's log buffers flush within 1 s)
    local a0 b0 a1 b1 busy
    for _ in $(seq 1 600); do
        read -r a0 _ _ <<<"$(core_ticks "$PROXY_CPU")"; read -r b0 _ _ <<<"$(core_ticks "$LOAD_CPU")"
        sleep 1.2
        read -r a1 _ _ <<<"$(core_ticks "$PROXY_CPU")"; read -r b1 _ _ <<<"$(core_ticks "$LOAD_CPU")"
        busy=$(awk -v t=$((a1 - a0 + b1 - b0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h / 1.2 }')
        if awk -v b="$busy" -v q="$QUIET" 'BEGIN { exit !(b < q) }'; then return 0; fi
        if [ "$QUIET_LEFT" -le 0 ]; then return 0; fi
        note "machine busy (other processes use $busy cores); waiting (${QUIET_LEFT}s of waiting left)"
        sleep 1; QUIET_LEFT=$((QUIET_LEFT - 2))
    done
}

# Runs one measurement. kind=closed: wrk at fixed concurrency; kind=rate: $RATE requests/s, by
# wrk paced with a Lua delay, or by switchyard-load in open loop (--rate-tool).
measure() { # kind candidate round position
    local kind=$1 c=$2 round=$3 pos=$4
    local tag="$kind-$c-$round"
    # shellcheck disable=SC2046
    local cpids; cpids=$(pids_of "$c" | tr '\n' ' ')
    local c0 u0 p0 l0 s0 k0 t0 c1 u1 p1 l1 s1 k1 t1
    wait_quiet
    s0=$(hits stable); k0=$(hits canary)
    c0=$(ticks_of $cpids); u0=$(ticks_of $UP_PIDS)
    p0=$(core_ticks "$PROXY_CPU"); l0=$(core_ticks "$LOAD_CPU"); t0=$(now)
    local TIMEFORMAT='%3U %3S'
    if [ "$kind" = closed ]; then
        { time taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency \
            -s "$WORK/report.lua" "${URL[$c]}" >"$WORK/raw/$tag.out" 2>"$WORK/raw/$tag.err"; } \
            2>"$WORK/raw/$tag.time"
    elif [ "$RATE_TOOL" = wrk ]; then
        { time taskset -c "$LOAD_CPU" wrk -t1 -c"$RATE_CONNECTIONS" -d"${RATE_DURATION}s" --timeout 5s \
            --latency -s "$WORK/paced.lua" "${URL[$c]}" >"$WORK/raw/$tag.out" 2>"$WORK/raw/$tag.err"; } \
            2>"$WORK/raw/$tag.time"
    else
        { time taskset -c "$LOAD_CPU" "$LOADGEN" --url "${URL[$c]}" --rate "$RATE" \
            --duration "${RATE_DURATION}s" --connections "$RATE_CONNECTIONS" --timeout 5s \
            --count-header x-served-by --json -q >"$WORK/raw/$tag.out" 2>"$WORK/raw/$tag.err"; } \
            2>"$WORK/raw/$tag.time"
    fi
    t1=$(now)
    c1=$(ticks_of $cpids); u1=$(ticks_of $UP_PIDS)
    p1=$(core_ticks "$PROXY_CPU"); l1=$(core_ticks "$LOAD_CPU")
    sleep 1.2
    s1=$(hits stable); k1=$(hits canary)
    local client
    if [ "$kind" = closed ] || [ "$RATE_TOOL" = wrk ]; then
        client=$(sed -n 's/^JSON //p' "$WORK/raw/$tag.out")
        [ -n "$client" ] || { cat "$WORK/raw/$tag.err" >&2; die "wrk gave no result for $tag"; }
    else
        client=$(tr -d '\n' <"$WORK/raw/$tag.out")
        [ -n "$client" ] || { cat "$WORK/raw/$tag.err" >&2; die "switchyard-load gave no result for $tag"; }
    fi
    read -r lu ls <"$WORK/raw/$tag.time"
    read -r pb pt ps <<<"$p0"; read -r pb1 pt1 ps1 <<<"$p1"
    read -r lb lt lsl <<<"$l0"; read -r lb1 lt1 lsl1 <<<"$l1"
    printf '{"kind":"%s","candidate":"%s","round":%d,"position":%d,"wall":%s,"clk_tck":%d,"proxy_ticks":%d,"upstream_ticks":%d,"loadgen_cpu_s":%s,"proxy_core":{"busy":%d,"total":%d,"steal":%d},"load_core":{"busy":%d,"total":%d,"steal":%d},"hits":{"stable":%d,"canary":%d},"client":%s}\n' \
        "$kind" "$c" "$round" "$pos" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
        "$CLK_TCK" $((c1 - c0)) $((u1 - u0)) "$(awk -v a="$lu" -v b="$ls" 'BEGIN { printf "%.3f", a + b }')" \
        $((pb1 - pb)) $((pt1 - pt)) $((ps1 - ps)) $((lb1 - lb)) $((lt1 - lt)) $((lsl1 - lsl)) \
        $((s1 - s0)) $((k1 - k0)) "$client" >>"$ROUND_FILE"
    # CPU that none of our processes used during the measurement, in % of one core: on the load
    # core (busy minus upstream and load generator) plus, with a proxy, on the proxy core (busy
    # minus the proxy). The direct run does not use the proxy core, so what runs there is no harm.
    LAST_OTHER=$(awk -v pc=$((pb1 - pb)) -v lc=$((lb1 - lb)) -v px=$((c1 - c0)) -v up=$((u1 - u0)) \
        -v lg="$lu $ls" -v h="$CLK_TCK" -v a="$t0" -v b="$t1" -v direct="$([ "$c" = direct ] && echo 1 || echo 0)" \
        'BEGIN { split(lg, x, " "); lo = lc - up - (x[1] + x[2]) * h; if (lo < 0) lo = 0;
                 po = pc - px; if (po < 0 || direct) po = 0;
                 printf "%d", (lo + po) / h / (b - a) * 100 }')
}

over_time() { [ $(( $(date +%s) - T_START )) -ge "$MAX_TOTAL_SECONDS" ]; }

# One round: every candidate once, in the given order. A round in which other processes used
# more than DISTURBED_PCT of a core during any measurement is run again (all of it, so the
# same-round ratios stay same-round), at most REDO times; the last attempt is kept either way
# and the summary marks it.
ROUND_FILE=$WORK/round.jsonl
REDO_LEFT=$REDO
run_round() { # kind round candidates...
    local kind=$1 r=$2 pos c worst
    shift 2
    for attempt in $(seq 1 $((REDO + 1))); do
        : >"$ROUND_FILE"
        worst=0; pos=0
        for c in "$@"; do
            pos=$((pos + 1))
            measure "$kind" "$c" "$r" "$pos"
            [ "$LAST_OTHER" -gt "$worst" ] && worst=$LAST_OTHER
            note "$kind $r $c: $(tail -n 1 "$ROUND_FILE" | python3 "$HERE/summarize.py" --line)"
        done
        [ "$worst" -le "$DISTURBED_PCT" ] && break
        if [ "$REDO_LEFT" -le 0 ] || over_time; then
            note "$kind round $r disturbed (other processes used up to $worst% of a core); kept, marked"
            break
        fi
        REDO_LEFT=$((REDO_LEFT - 1))
        note "$kind round $r disturbed (other processes used up to $worst% of a core); running it again"
    done
    cat "$ROUND_FILE" >>"$RESULTS"
}

read -ra FORWARD <<<"$CANDIDATES"
REVERSE=()
for ((i = ${#FORWARD[@]} - 1; i >= 0; i--)); do REVERSE+=("${FORWARD[i]}"); done

if [ "$WARMUP" -gt 0 ]; then
    note "warm-up: ${WARMUP}s per candidate"
    for c in "${FORWARD[@]}"; do
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${URL[$c]}" >/dev/null 2>&1 || true
    done
fi

total_rounds=$((2 * ROUNDS))
note "closed loop: $total_rounds rounds x ${#FORWARD[@]} candidates x ${DURATION}s, $CONNECTIONS connections"
for ((r = 1; r <= total_rounds; r++)); do
    over_time && { note "time budget spent; stopping before round $r"; break; }
    if ((r % 2 == 1)); then run_round closed "$r" "${FORWARD[@]}"; else run_round closed "$r" "${REVERSE[@]}"; fi
done

if [ "$RATE_DURATION" -gt 0 ] && [ "$RATE_ROUNDS" -gt 0 ]; then
    total_rate_rounds=$((2 * RATE_ROUNDS))
    note "fixed rate: $total_rate_rounds runs per candidate at $RATE req/s for ${RATE_DURATION}s ($RATE_TOOL)"
    for ((r = 1; r <= total_rate_rounds; r++)); do
        over_time && { note "time budget spent; stopping before fixed-rate run $r"; break; }
        if ((r % 2 == 1)); then run_round rate "$r" "${FORWARD[@]}"; else run_round rate "$r" "${REVERSE[@]}"; fi
    done
fi

# ---------------------------------------------------------------------------------------------
# Peak memory and facts about the run, then the summary.
rss_json="{"
threads_json="{"
first=1
for c in "${FORWARD[@]}"; do
    [ "$c" = direct ] && continue
    hwm=0; thr=0
    for p in $(pids_of "$c"); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        t=$(awk '/^Threads:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        hwm=$((hwm + ${v:-0})); thr=$((thr + ${t:-0}))
    done
    [ "$first" = 1 ] || { rss_json+=","; threads_json+=","; }
    first=0
    rss_json+="\"$c\":$hwm"; threads_json+="\"$c\":$thr"
done
rss_json+="}"; threads_json+="}"

cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
kernel=$(uname -r)
nginx_v=$(nginx -v 2>&1 | sed 's#.*/##')
haproxy_v=$(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}')
wrk_v=$(wrk -v 2>&1 | awk 'NR==1 {print $2}' || true)
if [ -n "$SWITCHYARD_BIN" ]; then
    sy_rev="$SWITCHYARD_BIN ($(stat -c %y "$SWITCHYARD" | cut -d. -f1))"
else
    sy_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    sy_dirty=$(git -C "$ROOT" status --porcelain -- proxy Cargo.toml Cargo.lock 2>/dev/null | head -c 1)
    if [ -n "$sy_dirty" ]; then sy_rev="$sy_rev+uncommitted changes"; fi
fi
M_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
export M_DATE M_COMMAND="$COMMAND_LINE" M_NPROC="$NCPU" M_CPU="$cpu_model" M_KERNEL="$kernel" \
    M_PROXY_CPU="$PROXY_CPU" M_LOAD_CPU="$LOAD_CPU" M_ROUNDS=$((2 * ROUNDS)) M_DURATION="$DURATION" \
    M_CONNECTIONS="$CONNECTIONS" M_RATE="$RATE" M_RATE_DURATION="$RATE_DURATION" \
    M_RATE_ROUNDS=$((2 * RATE_ROUNDS)) M_RATE_TOOL="$RATE_TOOL" M_REDONE=$((REDO - REDO_LEFT)) M_RATE_CONNECTIONS="$RATE_CONNECTIONS" M_NGINX="$nginx_v" M_HAPROXY="$haproxy_v" M_WRK="$wrk_v" \
    M_SWITCHYARD="$sy_rev" M_RSS="$rss_json" M_THREADS="$threads_json"
python3 - "$WORK/meta.json" <<'EOF'
import json, os, sys
e = os.environ
json.dump({
    "date": e["M_DATE"], "command": e["M_COMMAND"], "nproc": int(e["M_NPROC"]),
    "cpu_model": e["M_CPU"], "kernel": e["M_KERNEL"],
    "proxy_cpu": int(e["M_PROXY_CPU"]), "load_cpu": int(e["M_LOAD_CPU"]),
    "rounds": int(e["M_ROUNDS"]), "duration": int(e["M_DURATION"]),
    "connections": int(e["M_CONNECTIONS"]), "rate": int(e["M_RATE"]),
    "rate_duration": int(e["M_RATE_DURATION"]), "rate_rounds": int(e["M_RATE_ROUNDS"]),
    "rate_tool": e["M_RATE_TOOL"], "redone": int(e["M_REDONE"]), "rate_connections": int(e["M_RATE_CONNECTIONS"]),
    "versions": {"nginx": e["M_NGINX"], "haproxy": e["M_HAPROXY"], "wrk": e["M_WRK"],
                 "switchyard": e["M_SWITCHYARD"]},
    "peak_rss_kib": json.loads(e["M_RSS"]), "threads": json.loads(e["M_THREADS"]),
}, open(sys.argv[1], "w"), indent=1)
EOF

python3 "$HERE/summarize.py" "$WORK/meta.json" "$RESULTS" | tee "$WORK/results.md"
if [ -n "$OUT" ]; then
    cp "$WORK/results.md" "$OUT"
    mkdir -p "$OUT.raw" && cp "$RESULTS" "$WORK/meta.json" "$OUT.raw/"
    note "written: $OUT (raw rounds in $OUT.raw/)"
fi
