#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser a BTP peer or an LND node can feed, on the stable
# toolchain: libFuzzer (Debian's clang runtime, libclang_rt.fuzzer) drives binaries whose
# crates under test are compiled with SanitizerCoverage (cargo-fuzz's flags, through
# rustc-sancov.sh) without a sanitizer (sanitizers need nightly's -Zsanitizer; the crate is
# `#![forbid(unsafe_code)]`), with debug assertions and overflow checks on. Installs what it
# needs, builds once, then runs the targets one after another (one process: the machines have
# two shared cores), each for RUNS executions from the committed corpus, and prints one line
# per target: executions, exec/s, edges covered, features, corpus size, and whether it crashed.
#
#   tests/fuzz/run.sh [--runs N] [--update-corpus] [TARGET...]
#
# --runs N          executions per target (default 10,000,000)
# --update-corpus   merge what a run found into tests/fuzz/corpus/TARGET, minimised (libFuzzer
#                   -merge=1): the seed-* files (the reference vectors) are always kept, other
#                   files only if they add coverage
# TARGET...         some targets (default: every file in tests/fuzz/fuzz_targets)
#
# A crash stops the script with status 1 and leaves its input in tests/fuzz/artifacts/: fix the
# bug, add a test for it, and commit the input to tests/fuzz/regressions/TARGET/, which
# `cargo test` replays (tests/fuzz_corpus.rs). Logs go to tests/fuzz/logs/TARGET.log.
set -euo pipefail

runs=10000000
update_corpus=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --update-corpus) update_corpus=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"

# The main crate builds gRPC's C core (cmake, g++); libFuzzer comes with clang's runtime.
libfuzzer_a() { ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | tail -1; }
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
[ -n "$(libfuzzer_a)" ] || need_apt+=(libclang-rt-14-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi
export LIBFUZZER_A="$(libfuzzer_a)"

# The same target folder as `cargo test` (.ci/run's default): the fuzz build reuses its build
# of gRPC's C core and compiles only the instrumented crates anew (their profile overrides in
# Cargo.toml keep them apart from the test build's).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ilp-plugin-lightning/target}"
export RUSTC_WRAPPER="$fuzz_dir/rustc-sancov.sh"
(cd "$fuzz_dir" && cargo build --bins)
if [ ${#targets[@]} -eq 0 ]; then
  for file in "$fuzz_dir"/fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
fi

mkdir -p "$fuzz_dir/logs" "$fuzz_dir/artifacts"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-18s %12s %9s %6s %8s %7s  %s\n' target executions exec/s cov features corpus result
status=0
for target in "${targets[@]}"; do
  binary="$CARGO_TARGET_DIR/debug/$target"
  corpus="$fuzz_dir/corpus/$target"
  work="$fuzz_dir/work/$target"
  log="$fuzz_dir/logs/$target.log"
  mkdir -p "$corpus" "$work"
  # New inputs go to the scratch folder `work`; the committed corpus is only read.
  result=ok
  if ! "$binary" "$work" "$corpus" -runs="$runs" -max_len=4096 -timeout=10 \
      -rss_limit_mb=512 -print_final_stats=1 \
      -artifact_prefix="$fuzz_dir/artifacts/$target-" >"$log" 2>&1; then
    result="CRASH: see $log and $fuzz_dir/artifacts/"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  printf '%-18s %12s %9s %6s %8s %7s  %s\n' "$target" "${execs:-?}" "${speed:-?}" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
  if [ "$update_corpus" = 1 ] && [ "$result" = ok ]; then
    merged="$fuzz_dir/work/$target.merged"
    rm -rf "$merged"
    mkdir -p "$merged"
    find "$corpus" -maxdepth 1 -name 'seed-*' -exec cp {} "$merged/" \;
    # Edges, not hit counts: keeps every edge covered with far fewer files.
    "$binary" -merge=1 -use_counters=0 -max_len=4096 "$merged" "$corpus" "$work" >>"$log" 2>&1
    rm -rf "$corpus"
    mv "$merged" "$corpus"
    echo "  corpus/$target: $(find "$corpus" -type f | wc -l) files, $(du -sk "$corpus" | cut -f1) KiB"
  fi
done
exit $status
