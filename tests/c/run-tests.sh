#!/usr/bin/env bash
# run-tests.sh - runs C test programs, each case in a process of its own with
# a timeout, and ends with the line "N passed, N failed, N skipped".
#
# usage: tests/c/run-tests.sh BINARY...
#
# Each BINARY lists its cases with --list and runs one with --run NAME
# (tests/c/harness.h). A case's exit status: 0 passed, 77 skipped (e.g.
# io_uring unavailable here), anything else (a signal, a timeout) failed; the
# output of a failed case is printed, indented, under its name.
#
# Environment:
#   TEST_TIMEOUT  seconds a case may take (default 60: the cases take a few
#                 seconds at most, but the sanitizers slow them down)
#   TEST_FILTER   run only the cases whose "binary:case" name matches this
#                 extended regular expression
set -uo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi

timeout_s=${TEST_TIMEOUT:-60}
filter=${TEST_FILTER:-}
passed=0 failed=0 skipped=0
failures=()

now_ms() { date +%s%3N; }

for bin in "$@"; do
  name=$(basename "$bin")
  if ! cases=$("$bin" --list); then
    echo "FAIL  $name: --list failed"
    failures+=("$name")
    failed=$((failed + 1))
    continue
  fi
  for case in $cases; do
    if [ -n "$filter" ] && ! [[ "$name:$case" =~ $filter ]]; then
      continue
    fi
    start=$(now_ms)
    output=$(timeout -k 5 "$timeout_s" "$bin" --run "$case" 2>&1)
    status=$?
    elapsed=$(($(now_ms) - start))
    label=$(printf '%-52s %6d ms' "$name:$case" "$elapsed")
    case $status in
      0)
        echo "ok    $label"
        passed=$((passed + 1))
        ;;
      77)
        reason=$(grep -m1 '^skipped:' <<<"$output" || true)
        echo "skip  $label  ${reason#skipped: }"
        skipped=$((skipped + 1))
        ;;
      *)
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
          why="timed out after ${timeout_s}s"
        elif [ "$status" -gt 128 ]; then
          why="killed by signal $((status - 128))"
        else
          why="exit $status"
        fi
        echo "FAIL  $label  ($why)"
        if [ -n "$output" ]; then
          sed 's/^/      | /' <<<"$output"
        fi
        failures+=("$name:$case")
        failed=$((failed + 1))
        ;;
    esac
  done
done

if [ "${#failures[@]}" -gt 0 ]; then
  echo
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
