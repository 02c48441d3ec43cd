#!/bin/sh
# The real peers the line-output tests run against, on loopback: Debian's Mosquitto MQTT broker
# (pymodbus, the Modbus peer, comes with requirements.txt). Installed when it is missing and that is
# possible (root with apt-get); otherwise the MQTT tests skip and say what is missing. Never fails.
PATH="$PATH:/usr/sbin:/sbin"
command -v mosquitto >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: mosquitto is not installed (installing it needs root and apt-get): the MQTT tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends mosquitto >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && apt-get install -y -qq --no-install-recommends mosquitto >/dev/null 2>&1; } \
    || echo "note: installing mosquitto failed: the MQTT tests will skip"
exit 0
