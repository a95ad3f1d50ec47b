#!/usr/bin/env bash
# Print the path of a CPython 3.13/3.14 interpreter of the wanted flavour,
# building one when none is found.
# Usage: tools/find-python.sh ft|gil [PYTHON] [VERSION]
#
#   ft   a free-threaded build (sysconfig Py_GIL_DISABLED == 1)
#   gil  a default build with the GIL
#
# Order: PYTHON (the make variable PYTHON_FT / PYTHON_GIL), which must be of
# the right flavour; else python3.13t/python3.14t (ft) or python3.13/python3.14
# (gil) found on PATH that really are of that flavour and can create venvs;
# else tools/build-python.sh, which builds into (or reuses) ~/.cache/pyparallel.
# VERSION (3.13 or 3.14) narrows all of this to that version alone, and is
# the one built; without it, 3.13 is built.
# Names are checked, not trusted: Debian's python3.13 may lack venv, and a
# python3.13 installed beside a 3.13t may itself be free-threaded.
set -euo pipefail

flavour=${1:?usage: find-python.sh ft|gil [PYTHON] [VERSION]}
given=${2:-}
version=${3:-}
case "$version" in
  "") versions=(3.13 3.14) ;;
  3.13|3.14) versions=("$version") ;;
  *) echo "find-python.sh: version must be 3.13 or 3.14" >&2; exit 2 ;;
esac
case "$flavour" in
  ft)  want=1; names=("${versions[@]/#/python}"); names=("${names[@]/%/t}") ;;
  gil) want=0; names=("${versions[@]/#/python}") ;;
  *) echo "find-python.sh: flavour must be ft or gil" >&2; exit 2 ;;
esac

# Prints the interpreter's absolute path when it is one of $versions of the
# wanted flavour with venv and ensurepip; fails quietly otherwise.
suitable() {
  "$1" - "$want" "${versions[@]}" 2>/dev/null <<'PY'
import sys, sysconfig
import ensurepip, venv  # noqa: F401  (Debian splits these out)
want = int(sys.argv[1])
gil_disabled = 1 if sysconfig.get_config_var("Py_GIL_DISABLED") else 0
if "%d.%d" % sys.version_info[:2] not in sys.argv[2:] or gil_disabled != want:
    sys.exit(1)
print(sys.executable)
PY
}

if [ -n "$given" ]; then
  if ! suitable "$given"; then
    echo "find-python.sh: $given is not a usable CPython ${versions[*]}" \
         "$([ "$want" = 1 ] && echo free-threaded || echo GIL) build" \
         "(with venv and ensurepip)" >&2
    exit 1
  fi
  exit 0
fi

for name in "${names[@]}"; do
  if path=$(command -v "$name") && suitable "$path"; then
    exit 0
  fi
done

here=$(cd "$(dirname "$0")" && pwd)
built=$("$here/build-python.sh" "$flavour" ${version:+"$version"})
suitable "$built" || {
  echo "find-python.sh: $built (built by build-python.sh) is not a" \
       "$flavour interpreter" >&2
  exit 1
}
