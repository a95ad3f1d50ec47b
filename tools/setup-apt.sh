#!/usr/bin/env bash
# Install the Debian packages pyparallel needs, and only those still missing.
# With arguments, install those packages instead (the benchmark's nginx).
#
# Used by `make` before anything is built. The list covers: the C toolchain and
# liburing for the engine; clang, LLVM and the compiler-rt runtimes for the
# sanitizer builds and libFuzzer; CPython's build dependencies (for
# tools/build-python.sh when no 3.13t/3.13 is installed); clang-format for
# `make format`; wrk for the HTTP benchmarks; the outside programs of the
# end-to-end tests: headless Chromium and its WebDriver for the pages a
# person looks at (tests/python/browser.py), PostgreSQL for the database
# tests, HAProxy as the load balancer in front of several instances. One
# dpkg-query call decides what is missing, so on a set-up machine this costs
# a few milliseconds and needs no root.
set -euo pipefail

packages=(
  build-essential pkg-config liburing-dev
  clang llvm libclang-rt-14-dev clang-format
  libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev
  libreadline-dev libncurses-dev uuid-dev libgdbm-dev libgdbm-compat-dev
  libexpat1-dev
  wrk
  chromium chromium-driver postgresql haproxy
)
if [ "$#" -gt 0 ]; then
  packages=("$@")
fi

# dpkg-query names only the packages it knows; anything not listed as
# installed ("ii") is missing, including packages it has never heard of.
installed=" $( (dpkg-query -W -f='${db:Status-Abbrev}${Package}\n' \
                 "${packages[@]}" 2>/dev/null || true) \
               | awk '$1 == "ii" { printf "%s ", $2 }') "
missing=()
for name in "${packages[@]}"; do
  [[ "$installed" == *" $name "* ]] || missing+=("$name")
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "setup-apt: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "setup-apt: these Debian packages are missing and I am not root:" \
       "${missing[*]}" >&2
  echo "setup-apt: install them, or run make with SKIP_APT=1" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  </dev/null
