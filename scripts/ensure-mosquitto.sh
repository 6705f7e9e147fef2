#!/usr/bin/env bash
# Make sure the Mosquitto broker is installed; install it with apt-get when we are root.
set -u
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Mosquitto (Debian packages mosquitto, mosquitto-clients)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }; then
    echo "error: apt-get could not install mosquitto; install it by hand: apt-get install mosquitto mosquitto-clients" >&2
    exit 1
  fi
  # Debian starts the service where systemd runs; the project starts its own brokers on free ports.
  exit 0
fi
echo "error: Mosquitto is missing and this user cannot install it." >&2
echo "       Run: sudo apt-get install mosquitto mosquitto-clients   (then run make again)" >&2
exit 1
