#!/usr/bin/env bash
# A profile-guided release build of `switchyard`: builds an instrumented binary, runs it through
# the common request paths (`--example pgo-train`: HTTP/1.1 GETs and POSTs, closes, h2c, HTTP/2
# upstreams, mirroring, TLS), merges the profile, and builds again with it. The code a request runs through
# is then laid out together and the rare branches moved away from it: on this machine, about a
# sixth fewer instructions and a fifth less code run through per request (docs/performance.md,
# issue 16's fourteenth pass). The behaviour is the same source's; the test suite runs on the
# ordinary build.
#
# Usage: loadtest/pgo.sh [--seconds S] [--out PATH]
#   --seconds S   length of the training run (default 32: eight phases)
#   --out PATH    where the optimised binary is copied (default target/pgo/switchyard)
# Needs llvm-profdata of the compiler's own LLVM: rustup's llvm-tools component, installed here when
# missing. Builds in target/release (the driver), target/pgo-generate and target/pgo-use (about
# three release builds' time and disk); RUSTFLAGS already set are kept. Loopback only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SECONDS_TRAIN=32
OUT=$ROOT/target/pgo/switchyard
die() { echo "pgo.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_TRAIN=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$SECONDS_TRAIN" =~ ^[0-9]+$ ]] && [ "$SECONDS_TRAIN" -ge 8 ] && [ "$SECONDS_TRAIN" -le 300 ] \
    || die "--seconds is 8 to 300"

cd "$ROOT"
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
    command -v rustup >/dev/null || die "no $PROFDATA and no rustup to install llvm-tools"
    rustup component add llvm-tools
    [ -x "$PROFDATA" ] || die "rustup installed llvm-tools, but $PROFDATA is not there"
fi

PROFILES=$ROOT/target/pgo/profiles
rm -rf "$PROFILES"
mkdir -p "$PROFILES" "$(dirname "$OUT")"
FLAGS=${RUSTFLAGS:-}

echo "pgo.sh: 1/4 the training driver"
cargo build --release --locked --example pgo-train
echo "pgo.sh: 2/4 the instrumented binary"
RUSTFLAGS="$FLAGS -Cprofile-generate=$PROFILES" \
    cargo build --release --locked --bin switchyard --target-dir target/pgo-generate
echo "pgo.sh: 3/4 the training run ($SECONDS_TRAIN s)"
SWITCHYARD_BIN=$ROOT/target/pgo-generate/release/switchyard \
    "$ROOT/target/release/examples/pgo-train" "$SECONDS_TRAIN" || die "the training run failed"
compgen -G "$PROFILES/*.profraw" >/dev/null || die "the training run wrote no profile"
"$PROFDATA" merge -o "$PROFILES/switchyard.profdata" "$PROFILES"/*.profraw
echo "pgo.sh: 4/4 the optimised binary"
RUSTFLAGS="$FLAGS -Cprofile-use=$PROFILES/switchyard.profdata" \
    cargo build --release --locked --bin switchyard --target-dir target/pgo-use
cp target/pgo-use/release/switchyard "$OUT"
echo "pgo.sh: built $OUT"
