#!/usr/bin/env bash
# Coverage-guided fuzzing of Dunes' parsers with AFL++ on stable Rust (cargo-afl).
#   scripts/fuzz.sh build [full]          install cargo-afl if missing, build the harness
#                                         (full: also rule, hunt_sql, token, api_query;
#                                         DataFusion)
#   scripts/fuzz.sh run TARGET SECONDS    one campaign: corpus fuzz/corpus/TARGET, output
#                                         $FUZZ_OUT/TARGET (default ~/.cache/dunes/fuzz)
#   scripts/fuzz.sh cpu TARGET CPU_SECONDS  one campaign measured in CPU time: afl-fuzz and
#                                         its target run in their own cpuacct cgroup and
#                                         are stopped when together they used CPU_SECONDS
#                                         (root, cgroup v1 cpuacct or v2); prints the CPU
#                                         split and AFL's figures
#   scripts/fuzz.sh crashes               list crashing inputs of every campaign
# Targets: envelope ledger_files checkpoint_note maml otlp gateway rule hunt_sql token api_query
#   (fuzz/src/lib.rs).
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
  cpu)
    target="${2:?target}"; budget="${3:?cpu seconds}"
    mkdir -p "$OUT/$target"
    if [ -d /sys/fs/cgroup/cpuacct ]; then
      cg="/sys/fs/cgroup/cpuacct/dunes-fuzz-$target"; mkdir -p "$cg"
      used() { echo $(( $(cat "$cg/cpuacct.usage") / 1000000000 )); }
    else
      cg="/sys/fs/cgroup/dunes-fuzz-$target"; mkdir -p "$cg"
      used() { echo $(( $(awk '/^usage_usec/ {print $2}' "$cg/cpu.stat") / 1000000 )); }
    fi
    start=$(used)
    input="fuzz/corpus/$target"; [ -d "$OUT/$target/default/queue" ] && input=-
    # The subshell joins the cgroup before exec'ing afl-fuzz, so every target process
    # it forks is counted too (also the persistent ones afl-fuzz never reaps).
    (echo "$BASHPID" > "$cg/cgroup.procs"
     AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
       DUNES_FUZZ_TARGET="$target" exec nice -n "${FUZZ_NICE:-10}" \
       cargo afl fuzz -t 2000 -i "$input" -o "$OUT/$target" "$BIN" >"$OUT/$target.log" 2>&1) &
    fuzzer=$!
    t0=$(date +%s)
    while kill -0 "$fuzzer" 2>/dev/null && [ $(( $(used) - start )) -lt "$budget" ]; do
      # afl-fuzz setsid()s its target, and with autogroup scheduling a new
      # session competes as an equal of everything else whatever its nice
      # value: give the campaign's autogroups the same nice value.
      for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do
        echo "${FUZZ_NICE:-10}" > "/proc/$p/autogroup" 2>/dev/null || true
      done
      sleep 10
    done
    # afl-fuzz's own CPU (a fresh process per run), read before it exits; the rest of
    # the cgroup's is the target's.
    afl=$(pgrep -f "afl-fuzz .*-o $OUT/$target " | head -1 || true)
    own=0; [ -n "$afl" ] && own=$(awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) / hz)}' "/proc/$afl/stat")
    pkill -INT -f "afl-fuzz .*-o $OUT/$target " || true
    wait "$fuzzer" || true
    total=$(( $(used) - start ))
    echo "target=$target cpu_seconds=$total afl_fuzz_seconds=$own target_seconds=$(( total - own )) wall_seconds=$(( $(date +%s) - t0 ))"
    grep -E "execs_done|execs_per_sec|run_time|saved_crashes|saved_hangs|corpus_count|bitmap_cvg|stability" "$OUT/$target/default/fuzzer_stats" || tail -20 "$OUT/$target.log"
    ;;
  crashes)
    ls -1 "$OUT"/*/default/crashes/ 2>/dev/null | grep -v README || echo "no crashes"
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2 ;;
esac
