#!/usr/bin/env bash
# Run the steps of `make test` in order, each as a make target of its own, and
# print a summary. Usage: tools/test.sh MAKE [MAKE ARGS...] -- STEP...
#
# Every step runs even when an earlier one failed, so one broken suite does
# not hide the state of the others; the script fails when any step failed.
# Counts come from each step's last "N passed, N failed, N skipped" style line
# (pytest's, tests/c/run-tests.sh's, tools/fuzz.sh's); a step that prints none
# counts as one test. The closing line gives the totals in the plain
# "total: N passed, N failed, N skipped" form. Logs: build/test-logs/STEP.log.
set -uo pipefail
cd "$(dirname "$0")/.."

make_cmd=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  make_cmd+=("$1")
  shift
done
[ "$#" -gt 1 ] || { echo "usage: test.sh MAKE [ARGS...] -- STEP..." >&2; exit 2; }
shift

describe() {
  case "$1" in
    format-check) echo "C sources match .clang-format" ;;
    test-c-asan) echo "C engine tests, ASan+UBSan" ;;
    test-c-tsan) echo "C engine tests, TSan" ;;
    test-fuzz-quick) echo "libFuzzer, short run of each target" ;;
    test-py-ft-uring) echo "pytest .venv-ft, io_uring" ;;
    test-py-ft-epoll) echo "pytest .venv-ft, epoll" ;;
    test-py-gil-uring) echo "pytest .venv-gil (mode gil), io_uring" ;;
    test-py-gil-epoll) echo "pytest .venv-gil (mode gil), epoll" ;;
    test-py-gil-interp) echo "pytest .venv-gil (mode interpreters), io_uring" ;;
    test-py-gil-asan) echo "pytest .venv-gil (mode interpreters), extension under ASan+UBSan" ;;
    examples-c) echo "C examples build (gcc)" ;;
    dist-check) echo "wheels installed in fresh venvs, examples self-tested" ;;
    *) echo "$1" ;;
  esac
}

# The number before WORD (a regex) in LINE, or 0.
count() {
  if [[ $2 =~ ([0-9]+)\ ($1)([^a-z]|$) ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    echo 0
  fi
}

logs=build/test-logs
mkdir -p "$logs"
total_passed=0 total_failed=0 total_skipped=0
summary=()
any_failed=0

for step in "$@"; do
  echo
  echo "######## $step: $(describe "$step")"
  start=$SECONDS
  "${make_cmd[@]}" --no-print-directory "$step" 2>&1 | tee "$logs/$step.log"
  status=${PIPESTATUS[0]}
  elapsed=$((SECONDS - start))

  line=$(grep -E '[0-9]+ (passed|failed)' "$logs/$step.log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    passed=$(count passed "$line")
    failed=$(( $(count failed "$line") + $(count 'errors?' "$line") ))
    skipped=$(count skipped "$line")
  else
    passed=$((status == 0)) failed=0 skipped=0
  fi
  # A failing step counts at least one failure, whatever it printed.
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))

  if [ "$status" -eq 0 ]; then
    verdict=PASS
  else
    verdict=FAIL
    any_failed=1
  fi
  summary+=("$(printf '%s  %-40s %5d passed %4d failed %4d skipped %5ds' \
               "$verdict" "$(describe "$step")" "$passed" "$failed" \
               "$skipped" "$elapsed")")
  if [ "$status" -ne 0 ]; then
    summary+=("      (exit $status; log: $logs/$step.log)")
  fi
done

echo
echo "######## summary"
printf '%s\n' "${summary[@]}"
if [ "$any_failed" -ne 0 ]; then
  echo "make test: FAILED"
else
  echo "make test: all steps passed"
fi
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$any_failed"
