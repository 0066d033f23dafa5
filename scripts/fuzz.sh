#!/usr/bin/env bash
# Coverage-guided fuzzing of Dunes' parsers with AFL++ on stable Rust (cargo-afl).
#   scripts/fuzz.sh build [full]          install cargo-afl if missing, build the harness
#                                         (full: also rule, hunt_sql, token; DataFusion)
#   scripts/fuzz.sh run TARGET SECONDS    one campaign: corpus fuzz/corpus/TARGET, output
#                                         $FUZZ_OUT/TARGET (default ~/.cache/dunes/fuzz)
#   scripts/fuzz.sh crashes               list crashing inputs of every campaign
# Targets: envelope ledger_files checkpoint_note rule hunt_sql token (fuzz/src/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${FUZZ_OUT:-$HOME/.cache/dunes/fuzz}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_AFL:-$HOME/.cache/dunes/target-afl}"
BIN="$CARGO_TARGET_DIR/release/dunes-afl"
case "${1:-}" in
  build)
    command -v cargo-afl >/dev/null 2>&1 || cargo install cargo-afl --locked
    cargo afl config --build >/dev/null 2>&1 || true  # already built is fine
    (cd fuzz/afl && cargo afl build --release ${2:+--features "$2"})
    echo "built $BIN"
    ;;
  run)
    target="${2:?target}"; secs="${3:?seconds}"
    mkdir -p "$OUT/$target"
    # Resume when a previous campaign left a queue.
    input="fuzz/corpus/$target"; [ -d "$OUT/$target/default/queue" ] && input=-
    AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
      DUNES_FUZZ_TARGET="$target" \
      cargo afl fuzz -V "$secs" -t 2000 -i "$input" -o "$OUT/$target" "$BIN" >"$OUT/$target.log" 2>&1 || true
    grep -E "execs_done|execs_per_sec|run_time|saved_crashes|saved_hangs|corpus_count|bitmap_cvg" "$OUT/$target/default/fuzzer_stats" || tail -20 "$OUT/$target.log"
    ;;
  crashes)
    ls -1 "$OUT"/*/default/crashes/ 2>/dev/null | grep -v README || echo "no crashes"
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2 ;;
esac
