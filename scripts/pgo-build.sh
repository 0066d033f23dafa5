#!/usr/bin/env bash
# A profile-guided release build of `dunes` (rustc's PGO): an instrumented
# build replays simulated traffic (`dunes simulate`, so no outside data is
# needed and the profile is not the traffic it is measured on), then the
# release build is optimised with the merged profile.
#
#   scripts/pgo-build.sh            -> target-pgo/release/dunes
#
# Needs llvm-profdata of rustc's own LLVM: `rustup component add llvm-tools`.
# Two full release builds (~25 minutes each, cold, on 2 cores). The gain is
# measured in docs/benchmarks.md ("Profile-guided optimisation").
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS="${DUNES_PGO_SESSIONS:-3000}"
GEN_TARGET="${DUNES_PGO_GEN_TARGET:-$HOME/.cache/dunes/target-pgo-gen}"
OUT_TARGET="${DUNES_PGO_TARGET:-target-pgo}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Fixed paths in RUSTFLAGS, so a second run rebuilds only what changed: the
# raw profiles under the instrumented build's target, the merged profile
# named after its content (a new profile is a new flag, so cargo rebuilds).
RAW="$GEN_TARGET/pgo-raw"

sysroot="$(rustc --print sysroot)"
host="$(rustc -vV | sed -n 's/^host: //p')"
PROFDATA="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  echo "llvm-profdata of this toolchain is missing: rustup component add llvm-tools" >&2
  exit 1
fi

echo "1/3 instrumented build" >&2
CARGO_TARGET_DIR="$GEN_TARGET" RUSTFLAGS="-Cprofile-generate=$RAW" \
  cargo build --release --locked -p dunes
gen="$GEN_TARGET/release/dunes"

echo "2/3 training run: $SESSIONS simulated sessions with the standard's situations" >&2
rm -rf "$RAW"
"$gen" simulate --sessions "$SESSIONS" --seed 7 --standard --out "$WORK/train.ndjson" >/dev/null
"$gen" replay --rules rules --data-dir "$WORK/data" "$WORK/train.ndjson" >/dev/null
"$PROFDATA" merge -o "$WORK/dunes.profdata" "$RAW"
mkdir -p "$OUT_TARGET/pgo"
profile="$(realpath "$OUT_TARGET/pgo")/dunes-$(sha256sum "$WORK/dunes.profdata" | cut -c1-16).profdata"
cp "$WORK/dunes.profdata" "$profile"

echo "3/3 optimised build" >&2
CARGO_TARGET_DIR="$OUT_TARGET" RUSTFLAGS="-Cprofile-use=$profile" \
  cargo build --release --locked -p dunes
echo "$OUT_TARGET/release/dunes" >&2
