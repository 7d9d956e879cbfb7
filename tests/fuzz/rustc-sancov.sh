#!/usr/bin/env bash
# RUSTC_WRAPPER for run.sh: compiles the code under test (the main crate, this crate and its
# fuzz binaries) with cargo-fuzz's libFuzzer instrumentation (SanitizerCoverage: inline 8-bit
# counters, PC table, compare tracing, stack depth) and leaves every other crate as `cargo test`
# builds it, so that the fuzz build reuses the test build of gRPC's C core. (Dependencies stay
# uninstrumented: protobuf, for one, is also linked into the main crate's build script, which
# has no libFuzzer runtime to link against.)
rustc="$1"
shift
instrument=0
binary=0
previous=""
for arg in "$@"; do
  if [ "$previous" = "--crate-name" ]; then
    case "$arg" in
      ilp_plugin_lightning | ilp_plugin_lightning_fuzz) instrument=1 ;;
    esac
  fi
  case "$arg" in
    fuzz_targets/*.rs | */fuzz_targets/*.rs) instrument=1 binary=1 ;;
  esac
  previous="$arg"
done
link=()
if [ "$binary" = 1 ]; then
  # libFuzzer itself (its main() runs the target's LLVMFuzzerTestOneInput), from Debian's
  # clang runtime; run.sh sets LIBFUZZER_A.
  link=(-Clink-arg="${LIBFUZZER_A:?set LIBFUZZER_A to libclang_rt.fuzzer-x86_64.a}" -Clink-arg=-lstdc++)
fi
if [ "$instrument" = 1 ]; then
  exec "$rustc" "$@" "${link[@]}" --cfg fuzzing \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cllvm-args=-sanitizer-coverage-stack-depth \
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
fi
exec "$rustc" "$@"
