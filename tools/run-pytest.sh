#!/usr/bin/env bash
# Run the pytest suite (tests/python) in one venv with one I/O backend.
# Usage: tools/run-pytest.sh VENV uring|epoll MODE|default [PYTEST ARGS...]
#
# Sets PYPARALLEL_IO, PYPARALLEL_WORKERS=2 and PYPARALLEL_MODE (left unset for
# "default"). pytest's "no tests collected" (exit 5) is a failure here, never
# a success: a suite that silently runs nothing must not pass. The whole run
# is also bounded (PYTEST_RUN_TIMEOUT seconds, default 1800) in case a hang
# escapes pytest-timeout's per-test limit.
set -euo pipefail

venv=${1:?usage: run-pytest.sh VENV IO MODE [ARGS...]}
io=${2:?usage: run-pytest.sh VENV IO MODE [ARGS...]}
mode=${3:?usage: run-pytest.sh VENV IO MODE [ARGS...]}
shift 3
cd "$(dirname "$0")/.."

label="pytest $venv io=$io mode=$mode"
if [ ! -d tests/python ]; then
  echo "$label: tests/python does not exist" >&2
  exit 1
fi

export PYPARALLEL_IO=$io
export PYPARALLEL_WORKERS=2
if [ "$mode" = default ]; then
  unset PYPARALLEL_MODE
else
  export PYPARALLEL_MODE=$mode
fi

echo "== $label"
status=0
# pytest-timeout's thread method dumps every thread's stack and ends the
# process, which also works when a test hangs inside C code.
timeout --kill-after=30 "${PYTEST_RUN_TIMEOUT:-1800}" \
  "$venv/bin/python" -m pytest -p no:cacheprovider -q -rfEs \
  --timeout-method=thread "$@" tests/python || status=$?

case "$status" in
  0) ;;
  5) echo "$label: FAILED: pytest collected no tests (exit 5);" \
          "an empty suite counts as a failure" >&2
     status=1 ;;
  124|137) echo "$label: FAILED: the run exceeded" \
                "${PYTEST_RUN_TIMEOUT:-1800} s and was killed" >&2 ;;
  *) echo "$label: FAILED (pytest exit $status)" >&2 ;;
esac
exit "$status"
