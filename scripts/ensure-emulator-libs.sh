#!/usr/bin/env bash
# The emulated ESP32 (Espressif's QEMU) needs a few shared libraries; libslirp0, its user-mode
# network, is the one a fresh Debian lacks. Installed with apt-get when we are root; otherwise a
# warning only: without them the emulated-ESP32 tests skip and say why.
set -u
LIBS="libslirp0 libgcrypt20 libglib2.0-0 libpixman-1-0 zlib1g"
missing=""
for lib in libslirp.so.0 libgcrypt.so.20 libglib-2.0.so.0 libpixman-1.so.0 libz.so.1; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || missing="$missing $lib"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing the emulated ESP32's libraries (Debian packages $LIBS)"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq && apt-get install -y -qq $LIBS >/dev/null; then
    exit 0
  fi
  echo "warning: apt-get could not install $LIBS; the emulated-ESP32 tests will skip" >&2
  exit 0
fi
echo "warning: missing for the emulated ESP32:$missing; run: sudo apt-get install $LIBS" >&2
echo "         (until then the emulated-ESP32 tests skip)" >&2
exit 0
