#!/usr/bin/env bash
# Build CPython 3.13 from Debian's python3.13 source package (trixie) and install it
# under ~/.cache/pyparallel/. Usage: tools/build-python.sh gil|ft
# Prints the installed interpreter's path (python3.13, or python3.13t for ft).
#
# Debian 12 ships no 3.13, so we take the upstream tarball Debian packages (its
# orig.tar.xz, checked by apt against the archive's signatures) and build it
# plainly: no PGO/LTO and no test modules, which keeps a build near two minutes.
# apt is pointed at a private sources list and lists directory so the system's
# apt configuration is left untouched.
#
# The install is staged (DESTDIR) and moved into place whole, so an
# interrupted build never leaves a prefix that looks finished; a lock on the
# cache serialises concurrent calls (make -j builds both flavours at once).
set -euo pipefail

flavour=${1:?usage: build-python.sh gil|ft}
cache=${PYPARALLEL_CACHE:-$HOME/.cache/pyparallel}
case "$flavour" in
  gil) prefix=$cache/cpython-3.13; exe=python3.13; extra=() ;;
  ft)  prefix=$cache/cpython-3.13t; exe=python3.13t; extra=(--disable-gil) ;;
  *) echo "build-python.sh: flavour must be gil or ft" >&2; exit 2 ;;
esac

mkdir -p "$cache/src"
exec 9>"$cache/.build.lock"
flock 9

if [ -x "$prefix/bin/$exe" ]; then
  echo "$prefix/bin/$exe"
  exit 0
fi
echo "build-python.sh: building CPython 3.13 ($flavour) into $prefix" >&2

apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts"
cat >"$apt_dir/sources.list" <<LIST
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
LIST
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
          -o "Dir::Etc::SourceParts=$apt_dir/parts"
          -o "Dir::State::Lists=$apt_dir/lists")
# As root, apt would hand the download to the _apt user, who cannot write
# into our cache; download as ourselves instead.
[ "$(id -u)" -ne 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")

cd "$cache/src"
if ! ls python3.13_*.orig.tar.xz >/dev/null 2>&1; then
  apt-get "${apt_opts[@]}" -qq update >&2
  apt-get "${apt_opts[@]}" -qq source --download-only python3.13 >&2
fi
tarball=$(ls python3.13_*.orig.tar.xz | sort | tail -n 1)

build=$(mktemp -d "$cache/src/build-$flavour.XXXXXX")
trap 'rm -rf "$build"' EXIT
tar -xf "$tarball" -C "$build" --strip-components=1
cd "$build"
log=$build/build.log
./configure --prefix="$prefix" --disable-test-modules --with-ensurepip=install \
  "${extra[@]}" >"$log" 2>&1 \
  || { tail -n 40 "$log" >&2; exit 1; }
make -j"$(nproc)" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; exit 1; }
make install DESTDIR="$build/stage" >>"$log" 2>&1 \
  || { tail -n 40 "$log" >&2; exit 1; }
rm -rf "$prefix"
mv "$build/stage$prefix" "$prefix"
echo "$prefix/bin/$exe"
