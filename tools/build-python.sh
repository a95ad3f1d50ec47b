#!/usr/bin/env bash
# Build CPython from Debian's python3.X source package and install it under
# ~/.cache/pyparallel/. Usage: tools/build-python.sh gil|ft [3.13|3.14]
# (default 3.13). Prints the installed interpreter's path: python3.X (gil)
# or python3.Xt (ft), in ~/.cache/pyparallel/cpython-3.X or cpython-3.Xt.
#
# Debian 12 ships neither, so we take the upstream tarball Debian packages (its
# orig.tar.xz, checked by apt against the archive's signatures), 3.13 from
# trixie and 3.14 from forky, and build it plainly: no PGO/LTO and no test
# modules, which keeps a build near two minutes.
# apt is pointed at a private sources list and lists directory (one per suite)
# so the system's apt configuration is left untouched.
#
# When the archive will not hand out the 3.14 source package, the GIL build
# is installed from forky's binary packages instead (see install_debs below);
# Debian builds no free-threaded 3.14, so 3.14t then cannot be had.
#
# The install is staged (DESTDIR) and moved into place whole, so an
# interrupted build never leaves a prefix that looks finished; a lock on the
# cache serialises concurrent calls (make -j builds both flavours at once).
set -euo pipefail

usage="usage: build-python.sh gil|ft [3.13|3.14]"
flavour=${1:?$usage}
version=${2:-3.13}
cache=${PYPARALLEL_CACHE:-$HOME/.cache/pyparallel}
# The suite that carries python$version, and the private apt directory for
# it (3.13 keeps the plain name it has always had).
case "$version" in
  3.13) suite=trixie; apt_dir=$cache/apt ;;
  3.14) suite=forky; apt_dir=$cache/apt-forky ;;
  *) echo "build-python.sh: version must be 3.13 or 3.14" >&2; exit 2 ;;
esac
case "$flavour" in
  gil) prefix=$cache/cpython-$version; exe=python$version; extra=() ;;
  ft)  prefix=$cache/cpython-${version}t; exe=python${version}t; extra=(--disable-gil) ;;
  *) echo "build-python.sh: flavour must be gil or ft" >&2; exit 2 ;;
esac

mkdir -p "$cache/src"
exec 9>"$cache/.build.lock"
flock 9

if [ -x "$prefix/bin/$exe" ]; then
  echo "$prefix/bin/$exe"
  exit 0
fi
echo "build-python.sh: building CPython $version ($flavour) into $prefix" >&2

mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts"
{
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main"
  # The binary packages, for install_debs.
  [ "$version" = 3.13 ] ||
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main"
} >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
          -o "Dir::Etc::SourceParts=$apt_dir/parts"
          -o "Dir::State::Lists=$apt_dir/lists")
# As root, apt would hand the download to the _apt user, who cannot write
# into our cache; download as ourselves instead.
[ "$(id -u)" -ne 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")

# Installs the GIL build from Debian's binary packages into $prefix: the
# interpreter, its standard library, headers and ensurepip's wheels, with the
# suite's own C library and the shared libraries whose Debian 12 versions are
# too old. The interpreter is pointed (patchelf) at that C library's dynamic
# loader, and at its library directory through DT_RPATH, which, unlike
# RUNPATH, also serves the extension modules it loads; programs it starts
# (the compiler) still run on the system's own libraries.
install_debs() {
  local root=$build/root deb
  mkdir -p "$build/debs" "$root"
  (cd "$build/debs" &&
     apt-get "${apt_opts[@]}" -qq download libc6 libgcc-s1 \
       "python$version" "python$version-minimal" "python$version-dev" \
       "python$version-venv" "libpython$version" "libpython$version-minimal" \
       "libpython$version-stdlib" "libpython$version-dev" \
       python3-pip-whl python3-setuptools-whl \
       libbz2-1.0 libdb5.3t64 libexpat1 libffi8 liblzma5 libncursesw6 \
       libreadline8t64 libsqlite3-0 libssl3t64 libtinfo6 libuuid1 libzstd1 \
       zlib1g >&2)
  for deb in "$build"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root"
  done
  mkdir -p "$build/stage$(dirname "$prefix")"
  mv "$root/usr" "$build/stage$prefix"
  local triplet loader
  triplet=$(gcc -print-multiarch)
  loader=$(cd "$build/stage$prefix/lib/$triplet" && ls ld-linux*.so.*)
  patchelf --set-interpreter "$prefix/lib/$triplet/$loader" \
    --force-rpath --set-rpath "$prefix/lib/$triplet" \
    "$build/stage$prefix/bin/$exe"
  # Debian's pyconfig.h only includes the architecture's own from under
  # /usr/include; put that one in its place.
  cp "$build/stage$prefix/include/$triplet/python$version/pyconfig.h" \
    "$build/stage$prefix/include/python$version/pyconfig.h"
  # ensurepip looks for its wheels where the package put them, under /usr.
  sed -i "s|'WHEEL_PKG_DIR': '/usr/share/python-wheels/'|'WHEEL_PKG_DIR': '$prefix/share/python-wheels/'|" \
    "$build/stage$prefix/lib/python$version"/_sysconfigdata_*.py
}

cd "$cache/src"
have_source=1
if ! ls "python${version}_"*.orig.tar.xz >/dev/null 2>&1; then
  apt-get "${apt_opts[@]}" -qq update >&2
  if ! apt-get "${apt_opts[@]}" -qq source --download-only "python$version" >&2; then
    [ "$version" != 3.13 ] || exit 1
    have_source=0
  fi
fi

build=$(mktemp -d "$cache/src/build-$flavour.XXXXXX")
trap 'rm -rf "$build"' EXIT
if [ "$have_source" = 0 ]; then
  if [ "$flavour" = ft ]; then
    echo "build-python.sh: the python$version source package could not be" \
         "fetched from $suite, and Debian builds no free-threaded" \
         "python$version; give one with PYTHON_FT314=..." >&2
    exit 1
  fi
  echo "build-python.sh: installing python$version from $suite's binary" \
       "packages instead" >&2
  command -v patchelf >/dev/null ||
    { echo "build-python.sh: patchelf is needed (apt-get install patchelf)" >&2
      exit 1; }
  install_debs
else
  tarball=$(ls "python${version}_"*.orig.tar.xz | sort | tail -n 1)
  tar -xf "$tarball" -C "$build" --strip-components=1
  cd "$build"
  log=$build/build.log
  ./configure --prefix="$prefix" --disable-test-modules --with-ensurepip=install \
    "${extra[@]}" >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; exit 1; }
  make -j"$(nproc)" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; exit 1; }
  make install DESTDIR="$build/stage" >>"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; exit 1; }
fi
rm -rf "$prefix"
mv "$build/stage$prefix" "$prefix"
# The loader path patchelf wrote exists only now that the prefix is in place.
if [ "$have_source" = 0 ] && ! "$prefix/bin/$exe" -c 'import ensurepip, ssl, venv'; then
  echo "build-python.sh: the installed python$version does not run" >&2
  rm -rf "$prefix"
  exit 1
fi
echo "$prefix/bin/$exe"
