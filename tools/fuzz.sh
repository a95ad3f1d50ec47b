#!/usr/bin/env bash
# Run libFuzzer targets one after the other, each for SECONDS.
# Usage: tools/fuzz.sh SECONDS BINARY...   (binaries named fuzz_<name>)
#
# For target fuzz_<name>, the seeds are fuzz/corpus/<name>/ (when present) and
# fuzz/<name>.dict is used as a dictionary (when present). New inputs go to
# build/fuzz/corpus/<name>/, never into the committed corpus: merge them by
# hand with `BINARY -merge=1 fuzz/corpus/<name> build/fuzz/corpus/<name>`.
# Crashes, leaks and timeouts are written to build/fuzz/artifacts/<name>/.
# Ends with "fuzz: N passed, M failed" and fails when any target failed.
set -euo pipefail

seconds=${1:?usage: fuzz.sh SECONDS BINARY...}
shift
[ "$#" -gt 0 ] || { echo "fuzz.sh: no fuzz targets given" >&2; exit 1; }
cd "$(dirname "$0")/.."

passed=0
failed=()
for binary in "$@"; do
  target=$(basename "$binary")
  name=${target#fuzz_}
  work=build/fuzz/corpus/$name
  artifacts=build/fuzz/artifacts/$name
  mkdir -p "$work" "$artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$artifacts/")
  [ -f "fuzz/$name.dict" ] && args+=(-dict="fuzz/$name.dict")
  dirs=("$work")
  [ -d "fuzz/corpus/$name" ] && dirs+=("fuzz/corpus/$name")

  seeds=${dirs[*]:1}
  echo "== $target: ${seconds} s, seeds: ${seeds:-none}"
  log=build/fuzz/$target.log
  # libFuzzer prints its progress on stderr; keep the full log, show the end.
  if "$binary" "${args[@]}" "${dirs[@]}" >"$log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' \
      "$log" | sed 's/^/   /' || true
    passed=$((passed + 1))
  else
    echo "   FAILED: $target (log: $log, artifacts: $artifacts/)" >&2
    report=$(grep -E -A 40 '^==[0-9]+==|deadly signal|runtime error' "$log" \
             | head -n 60 || true)
    if [ -n "$report" ]; then echo "$report" >&2; else tail -n 40 "$log" >&2; fi
    failed+=("$target")
  fi
done

echo "fuzz: $passed passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
