#!/usr/bin/env bash
# Installs the web servers the front-end tests run (nginx, lighttpd, Apache, and Apache's
# mod_wsgi for the import-apache test), curl, the pgrep/setpriv the supervisor and preflight
# tests use, the socket launchers spawn-fcgi and systemd-socket-activate, and Debian's python3
# with its libpython to link and venv (tools/test.sh's smoke run on the Python a Debian admin
# has), from Debian's packages, when any of them is missing. The tests start their own server
# processes with their own configs: the distro services are neither needed nor started here.
set -euo pipefail

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

missing=0
for tool in nginx lighttpd apache2 curl pgrep setpriv spawn-fcgi systemd-socket-activate; do
    have "$tool" || missing=1
done
[ -f /usr/lib/apache2/modules/mod_wsgi.so ] || missing=1
# Debian's python3: its libpython3.X.so (libpython3-dev) and ensurepip (python3-venv).
/usr/bin/python3 -c '
import ensurepip, os, sys, sysconfig
v = sysconfig.get_config_var
sys.exit(0 if os.path.exists(os.path.join(v("LIBDIR"), v("LDLIBRARY"))) else 1)' 2>/dev/null || missing=1
[ "$missing" = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "install-test-deps: installing nginx lighttpd apache2 libapache2-mod-wsgi-py3 curl procps util-linux spawn-fcgi systemd python3 libpython3-dev python3-venv" >&2
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: the packages' maintainer scripts must not start the distro services
# (where there is an init system at all); the tests run their own server processes.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
fi
cleanup() {
    if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; fi
}
trap cleanup EXIT
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends nginx lighttpd apache2 libapache2-mod-wsgi-py3 \
    curl procps util-linux spawn-fcgi systemd python3 libpython3-dev python3-venv
