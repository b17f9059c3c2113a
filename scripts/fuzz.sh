#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each, on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
#
# cargo-fuzz itself needs nightly; this builds the same binaries with the same
# libFuzzer coverage instrumentation (sancov, the flags cargo-fuzz passes) on stable,
# without AddressSanitizer (which needs -Zsanitizer; the code under test is safe Rust,
# and debug assertions and overflow checks are on). With nightly and cargo-fuzz,
# `cd fuzz && cargo fuzz run protocol_decode` works as usual.
#
# The corpus in fuzz/corpus/TARGET is kept in the repository and grows as the fuzzer
# finds new paths (FUZZ_KEEP_CORPUS=0: new inputs go to a temporary dir instead, so a CI
# run leaves the tree clean). A crash leaves its input in fuzz/artifacts/TARGET and
# fails the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(protocol_decode server_messages client_messages)
fi

export RUSTFLAGS="-Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz).
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --quiet --target "$HOST"

for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzzing $t for ${SECONDS_EACH}s (corpus: fuzz/corpus/$t, $(ls "corpus/$t" | wc -l) inputs)"
  dirs=("corpus/$t")
  if [ "${FUZZ_KEEP_CORPUS:-1}" = 0 ]; then
    scratch=$(mktemp -d)
    dirs=("$scratch" "corpus/$t")
  fi
  # -timeout: an input that takes over 10 s is a hang. -rss_limit_mb: a leak is a bug.
  "target/$HOST/release/$t" "${dirs[@]}" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | tail -n 25
done
