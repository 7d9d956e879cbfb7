#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser a BTP peer or an LND node can feed, on the stable
# toolchain: cargo-fuzz drives libFuzzer, built with `--sanitizer none` (a sanitizer would need
# nightly's -Zsanitizer; Rust code is memory-safe without it, and `#![forbid(unsafe_code)]`
# holds in the crate) and `--debug-assertions` (overflow checks on). Installs what it needs,
# builds once, then runs the targets one after another (one process: the machines have two
# shared cores), each for RUNS executions from the committed corpus, and prints one line per
# target: executions, exec/s, coverage, and whether it crashed.
#
#   tests/fuzz/run.sh [--runs N] [--update-corpus] [TARGET...]
#
# --runs N          executions per target (default 10,000,000)
# --update-corpus   merge what a run found into tests/fuzz/corpus/TARGET, minimised (libFuzzer
#                   -merge=1): the seed-* files (the reference vectors) are always kept, other
#                   files only if they add coverage
# TARGET...         some targets (default: every one, `cargo fuzz list`)
#
# A crash stops the script with status 1 and leaves its input in tests/fuzz/artifacts/TARGET/:
# fix the bug, add a test for it, and commit the input to tests/fuzz/regressions/TARGET/, which
# `cargo test` replays (tests/fuzz_corpus.rs). Logs go to tests/fuzz/logs/TARGET.log.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
runs=10000000
update_corpus=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --update-corpus) update_corpus=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir/../.."

# The main crate builds gRPC's C core (grpcio-sys): it needs cmake and a C++ compiler.
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# Instrumented builds differ from ordinary ones: keep them apart, outside the clone. A cold
# build compiles gRPC's C core once more (about 10 minutes on two cores).
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/ilp-plugin-lightning/fuzz-target}"
build_flags=(--fuzz-dir "$fuzz_dir" --sanitizer none --debug-assertions)
cargo fuzz build "${build_flags[@]}"
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

mkdir -p "$fuzz_dir/logs"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '%-18s %12s %9s %7s %8s %7s  %s\n' target executions exec/s cov features corpus result
status=0
for target in "${targets[@]}"; do
  corpus="$fuzz_dir/corpus/$target"
  work="$fuzz_dir/work/$target"
  log="$fuzz_dir/logs/$target.log"
  mkdir -p "$corpus" "$work"
  # New inputs go to the scratch folder `work`; the committed corpus is only read.
  result=ok
  if ! cargo fuzz run "${build_flags[@]}" "$target" "$work" "$corpus" -- \
      -runs="$runs" -max_len=4096 -timeout=10 -rss_limit_mb=512 \
      -print_final_stats=1 >"$log" 2>&1; then
    result="CRASH: see $log and $fuzz_dir/artifacts/$target/"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  printf '%-18s %12s %9s %7s %8s %7s  %s\n' "$target" "${execs:-?}" "${speed:-?}" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
  if [ "$update_corpus" = 1 ] && [ "$result" = ok ]; then
    merged="$fuzz_dir/work/$target.merged"
    rm -rf "$merged"
    mkdir -p "$merged"
    find "$corpus" -maxdepth 1 -name 'seed-*' -exec cp {} "$merged/" \;
    cargo fuzz run "${build_flags[@]}" "$target" "$merged" "$corpus" "$work" -- \
      -merge=1 -max_len=4096 >>"$log" 2>&1
    rm -rf "$corpus"
    mv "$merged" "$corpus"
    echo "  corpus/$target: $(find "$corpus" -type f | wc -l) files, $(du -sk "$corpus" | cut -f1) KiB"
  fi
done
exit $status
