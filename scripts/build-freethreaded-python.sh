#!/usr/bin/env bash
# Build a free-threaded CPython (PEP 703, "3.13t": the GIL off) from Debian's own
# source package, on a machine whose Debian is older than the one that ships 3.13.
# (.ci/run calls it for its free-threaded leg; docs/freethreading.md. A thread-
# sanitized one for the race detector: scripts/tsan.sh.)
# The system's apt setup is left alone: the source index goes to a folder of its own.
#
#   build-freethreaded-python.sh [PREFIX]        # default PREFIX: /opt/py313t
#
# Then: PREFIX/bin/python3.13t -m venv VENV && VENV/bin/pip install --prefer-binary -e ".[test]"
# (--prefer-binary: the newest SciPy may have no free-threaded wheel yet, and its
# sdist needs a Fortran compiler). Takes about 6 minutes on 2 cores; a second call
# with the interpreter already built returns at once. Needs root (apt) and the C
# build tools; the Python build dependencies (libssl-dev, zlib1g-dev, libffi-dev,
# ...) are installed with apt-get if missing.
set -euo pipefail
prefix=${1:-/opt/py313t}
suite=${FT_DEBIAN_SUITE:-trixie}        # the Debian release whose python3.13 source is used
py="$prefix/bin/python3.13t"
if [ -x "$py" ] && "$py" -c 'import sys; sys.exit(0 if not sys._is_gil_enabled() else 1)' 2>/dev/null; then
  echo "free-threaded CPython already at $py"; exit 0
fi

work=${FT_WORK:-/tmp/ft-cpython}
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
# The mirror this machine already uses for Debian's packages.
uri=$(grep -h -m1 -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
[ -n "$uri" ] || uri=$(grep -h -m1 -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true)
[ -n "$uri" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" >"$work/apt/sources.list"
A=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o Dir::Etc::sourceparts=- \
   -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache")

missing=()
for p in build-essential libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev uuid-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cd "$work"
if ! ls python3.13_*.orig.tar.xz >/dev/null 2>&1; then
  apt-get "${A[@]}" update -qq
  apt-get "${A[@]}" source --download-only python3.13 >/dev/null
fi
tarball=$(ls python3.13_*.orig.tar.xz | head -n 1)
src=Python-$(basename "$tarball" | sed -E 's/^python3\.13_([0-9.]+)\.orig\.tar\.xz$/\1/')
[ -d "$src" ] || tar xf "$tarball"
cd "$src"
./configure --disable-gil --prefix="$prefix" --with-ensurepip=install >"$work/configure.log" 2>&1
make -j"$(nproc)" >"$work/make.log" 2>&1
make install >"$work/install.log" 2>&1
"$py" -c 'import sys; assert not sys._is_gil_enabled(); print(sys.version)'
echo "free-threaded CPython at $py"
