#!/usr/bin/env bash
# The long form of the fault suite: every fault test with long durations (5 min of loss,
# 100 kill -9 iterations, …), then the fuzz targets for 10 minutes each, and a table of
# scenario | outcome | figures. Needs root (network namespaces, tmpfs) and the packages
# from tests/install-deps.sh. The short form runs in `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZ_SECONDS="${FUZZ_SECONDS:-600}"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo build -p weft-node
status=0
WEFT_FAULT_LONG=1 cargo test --no-fail-fast -p weft-tests --test faults --test floods --test gossip_attacks --test traffic \
  -- --nocapture --test-threads 1 2>&1 | tee "$out" || status=1
# 10 000 signed config entries to a late joiner (the short form writes 1 500): ~3 min.
WEFT_LONG=1 cargo test -p weft-tests --test cluster_config thousands_of_entries_reach_a_late_joiner \
  -- --nocapture 2>&1 | tee -a "$out" || status=1

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
  for t in ca:token node:join_request node:stream_header node:cluster_config gossip:gossip_datagram; do
    crate=${t%%:*} target=${t#*:}
    if (cd "$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" >/dev/null 2>&1); then
      echo "FAULT | 17 fuzz $crate/$target | pass | ${FUZZ_SECONDS} s, no crash" | tee -a "$out"
    else
      echo "FAULT | 17 fuzz $crate/$target | FAIL | see $crate/fuzz/artifacts/$target" | tee -a "$out"
    fi
  done
fi

echo
echo "scenario | outcome | figures"
echo "--- | --- | ---"
# Output of parallel writers can share a line: take every "FAULT | …" wherever it starts.
grep -o 'FAULT | .*' "$out" | sed 's/^FAULT | //'
if grep -q '^test .* FAILED$' "$out"; then
  echo
  echo "tests that failed (some before printing their row):"
  grep '^test .* FAILED$' "$out"
fi
if grep -q 'FAULT | .* | FAIL | ' "$out"; then status=1; fi
exit "$status"
