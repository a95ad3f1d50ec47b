#!/usr/bin/env bash
# Use each wheel in dist/ the way a user would, away from this checkout.
# Usage: tools/dist-check.sh VENV...
#
# For each VENV (the venvs tools/dist.sh built the wheels with), the wheel
# for its interpreter is installed into a fresh venv made from the same base
# interpreter, with pip offline and no compiler (CC=false: a wheel that
# wanted building would fail here, so liburing's headers cannot matter).
# Then, run from a temporary directory with PYTHONPATH unset, so that nothing
# of the checkout can help:
#   - pyparallel is imported from the new venv, and its _core extension loads
#     liburing from the copy auditwheel put in the wheel, not the system's;
#   - python -m pyparallel --version and the HTTP server's --version print
#     the installed distribution's version;
#   - every example's --selftest passes (examples/*.py copied to a temporary
#     directory; their default mode for the build, two workers).
# Every check is reported on a line of its own, a failure with its output
# below it, and the closing line counts them ("N passed, N failed, N
# skipped"). The temporary venvs are removed at exit.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[ "$#" -gt 0 ] || { echo "usage: dist-check.sh VENV..." >&2; exit 2; }

unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYPARALLEL_MODE PYPARALLEL_IO
export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PYPARALLEL_WORKERS=2
export CC=false
# Seconds an example's self-test may take (its own watchdog says 30).
SELFTEST_TIMEOUT=${SELFTEST_TIMEOUT:-90}

tmp=$(mktemp -d -t pyparallel-dist-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/examples"
cp examples/*.py "$tmp/examples/"

passed=0 failed=0

# check LABEL COMMAND...: runs COMMAND in the examples' copy, counts it.
check() {
  local label=$1 output status
  shift
  output=$(cd "$tmp/examples" && "$@" 2>&1)
  status=$?
  if [ "$status" -eq 0 ]; then
    echo "ok    $label"
    passed=$((passed + 1))
  else
    echo "FAIL  $label (exit $status)"
    sed 's/^/      | /' <<<"$output"
    failed=$((failed + 1))
  fi
}

for venv in "$@"; do
  if ! info=$("$venv/bin/python" -c '
import sys, sysconfig
abi = "cp%d%d" % sys.version_info[:2]
print(abi, abi + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""), sys._base_executable)'); then
    check "$venv: interpreter" false
    continue
  fi
  read -r pytag abi base <<<"$info"
  wheels=(dist/pyparallel-*-"$pytag-$abi"-*.whl)
  if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    check "$abi: one wheel in dist/ (found: ${wheels[*]}; run make dist)" false
    continue
  fi
  wheel=$root/${wheels[0]}
  env=$tmp/venv-$abi
  py=$env/bin/python
  echo "== $(basename "$wheel") in a fresh venv of $base"
  if ! "$base" -m venv "$env" || \
     ! "$py" -m pip install -q --no-index --no-deps --only-binary=:all: \
       --disable-pip-version-check "$wheel"; then
    check "$abi: install the wheel" false
    continue
  fi

  check "$abi: pyparallel comes from the new venv" "$py" -c '
import os, sys
import pyparallel, pyparallel._core
venv = os.path.realpath(sys.prefix)
for module in (pyparallel, pyparallel._core):
    where = os.path.realpath(module.__file__)
    assert where.startswith(venv + os.sep), f"{module.__name__} from {where}, not {venv}"
'
  check "$abi: _core loads the liburing vendored in the wheel" "$py" -c '
import subprocess, sys
import pyparallel._core
ldd = subprocess.run(["ldd", pyparallel._core.__file__], capture_output=True, text=True, check=True).stdout
lines = [line.strip() for line in ldd.splitlines() if "liburing" in line]
print(*lines, sep="\n")
assert lines, "no liburing in ldd output:\n" + ldd
for line in lines:
    assert "pyparallel.libs/" in line, f"not the vendored liburing: {line}"
'
  check "$abi: python -m pyparallel --version" "$py" -c '
import importlib.metadata, subprocess, sys
version = importlib.metadata.version("pyparallel")
for module in ("pyparallel", "pyparallel.http.server"):
    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    print(out.stdout, out.stderr, end="")
    assert out.returncode == 0, f"{module} --version: exit {out.returncode}"
    assert out.stdout.splitlines()[0] == f"pyparallel {version}", out.stdout
'
  for example in "$tmp"/examples/*.py; do
    name=$(basename "$example")
    case "$name" in _*) continue ;; esac
    check "$abi: examples/$name --selftest" \
      timeout -k 5 "$SELFTEST_TIMEOUT" "$py" "$name" --selftest
  done
done

echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
