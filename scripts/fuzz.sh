#!/usr/bin/env bash
# Coverage-guided fuzzing of the module's pure logic (fuzz/, see fuzz/README.md).
#
#   scripts/fuzz.sh smoke [TARGET...]          a short seeded run of each; fails on any crash
#   scripts/fuzz.sh long SECONDS [TARGET...]   SECONDS each; a summary of executions and
#                                              coverage goes to fuzz/target/summary.txt
#   scripts/fuzz.sh cmin [TARGET...]           minimise the committed corpora after long runs
#   scripts/fuzz.sh regressions [TARGET...]    replay fuzz/regressions/<target>/ with the known
#                                              issues checked; fails while any still reproduces
#
# No TARGET means all of them. FUZZ_PARALLEL=2 runs two targets at a time (long). Runs are
# niced (FUZZ_NICE, default 10). The fuzz crate has its own target dir (fuzz/target), so it
# never fights the main build. Targets are built once, then the binaries run: edits under
# src/ during a long run do not change what is being fuzzed halfway through.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-smoke}
[ "$mode" != long ] || seconds=${2:?usage: scripts/fuzz.sh long SECONDS [TARGET...]}
nice_level=${FUZZ_NICE:-10}
parallel=${FUZZ_PARALLEL:-1}
# Deterministic smoke: same seed, same number of executions, every time.
smoke_runs=${FUZZ_SMOKE_RUNS:-500000}
# Safe Rust only: AddressSanitizer would halve the speed and find nothing that the type
# system does not already rule out. Debug assertions and overflow checks stay on.
fuzz=(cargo +nightly fuzz)
opts=(--fuzz-dir fuzz --target-dir fuzz/target --sanitizer none)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

logs=fuzz/target/logs
bin=fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
mkdir -p "$logs"

build() {
  local start=$SECONDS
  nice -n "$nice_level" "${fuzz[@]}" build "${opts[@]}"
  echo "built in $((SECONDS - start)) s"
}

# One target, as `cargo fuzz run` would start it; its output goes to $logs/<target>.log.
run() {
  local target=$1; shift
  local corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  local before after
  before=$(find "fuzz/artifacts/$target" -type f | wc -l)
  local rc=0
  nice -n "$nice_level" "$bin/$target" -artifact_prefix="fuzz/artifacts/$target/" "$@" \
    >"$logs/$target.log" 2>&1 || rc=$?
  after=$(find "fuzz/artifacts/$target" -type f | wc -l)
  local done_line execs
  # libFuzzer's final `#N DONE cov: X ft: Y ...`, or its last status line after a crash.
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logs/$target.log" | tail -1 ||
    grep -E '^#[0-9]+[[:space:]]' "$logs/$target.log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -1)
  printf '%-16s rc=%-3s execs=%-12s corpus=%-5s crashes=%-2s %s\n' "$target" "$rc" "${execs:-?}" \
    "$(find "$corpus" -type f | wc -l)" "$((after - before))" "${done_line:-no DONE line}"
  return "$rc"
}

case $mode in
smoke | cmin | regressions) shift || true ;;
long) shift 2 || true ;;
esac
targets=${*:-$("${fuzz[@]}" list --fuzz-dir fuzz)}

case $mode in
smoke)
  build
  failed=0
  start=$SECONDS
  for target in $targets; do
    # New inputs go to a scratch dir (libFuzzer writes to the first corpus dir), so a
    # smoke run never changes the committed corpus.
    scratch=$(mktemp -d)
    run "$target" "$scratch" "fuzz/corpus/$target" \
      -seed=1 -runs="$smoke_runs" -print_final_stats=1 || failed=1
    rm -rf "$scratch"
  done
  echo "smoke: $((SECONDS - start)) s for all targets"
  if [ "$failed" != 0 ]; then
    echo "smoke: FAILED; see $logs/ and fuzz/artifacts/" >&2
    exit 1
  fi
  ;;
long)
  build
  summary=fuzz/target/summary.txt
  echo "# $(date -u +%FT%TZ) long run, $seconds s per target, $parallel at a time" >"$summary"
  pids=()
  for target in $targets; do
    ( run "$target" "fuzz/corpus/$target" -max_total_time="$seconds" -print_final_stats=1 >>"$summary" || true ) &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$parallel" ]; then
      wait -n
      pids=($(jobs -pr))
    fi
  done
  wait
  cat "$summary"
  if grep -q 'crashes=[1-9]' "$summary"; then
    echo "long: crashes found; reproducers in fuzz/artifacts/" >&2
    exit 1
  fi
  ;;
cmin)
  for target in $targets; do
    before=$(find "fuzz/corpus/$target" -type f | wc -l)
    # Edges only (no hit counters), so that the committed corpus stays a few dozen files;
    # the hand-picked seed-* files are kept whatever they add.
    mkdir -p "$logs/seeds/$target"
    cp fuzz/corpus/"$target"/seed-* "$logs/seeds/$target/" 2>/dev/null || true
    nice -n "$nice_level" "${fuzz[@]}" cmin "${opts[@]}" "$target" -- -use_counters=0 \
      >"$logs/$target.cmin.log" 2>&1
    cp "$logs/seeds/$target"/seed-* "fuzz/corpus/$target/" 2>/dev/null || true
    echo "$target: $before -> $(find "fuzz/corpus/$target" -type f | wc -l) files," \
      "$(grep -o '[0-9]* new coverage edges' "$logs/$target.cmin.log" | tail -1)"
  done
  ;;
regressions)
  build
  failed=0
  for target in $targets; do
    for input in fuzz/regressions/"$target"/*; do
      [ -f "$input" ] && [ "${input##*.}" != md ] || continue
      if NGINX_KAFKA_FUZZ_STRICT=1 "$bin/$target" "$input" >"$logs/regression.log" 2>&1; then
        echo "fixed      $input"
      else
        echo "reproduces $input: $(grep -m1 -A1 panicked "$logs/regression.log" | tail -1)"
        failed=1
      fi
    done
  done
  exit "$failed"
  ;;
*)
  echo "usage: scripts/fuzz.sh smoke | long SECONDS | cmin | regressions [TARGET...]" >&2
  exit 2
  ;;
esac
