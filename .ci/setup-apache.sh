#!/usr/bin/env bash
# CI: Apache httpd from Debian for tests/apache.rs (the layered topology: Apache with mod_ssl,
# mod_security2 + OWASP CRS, mod_headers, mod_unique_id, mod_proxy_http in front of Gatehouse).
# Run as root. Only installs: the test starts its own apache2 process with its own ServerRoot,
# config, ports and PidFile under a temporary directory; the system service is never used.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v apache2 >/dev/null || [ ! -e /usr/lib/apache2/modules/mod_security2.so ] || [ ! -d /usr/share/modsecurity-crs ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends apache2 libapache2-mod-security2 modsecurity-crs ssl-cert openssl >/dev/null
fi
# Debian starts the service on install; the tests do not want it holding port 80.
if command -v service >/dev/null; then service apache2 stop >/dev/null 2>&1 || true; fi
if [ -f /run/apache2/apache2.pid ]; then kill "$(cat /run/apache2/apache2.pid)" 2>/dev/null || true; fi
command -v apache2 >/dev/null
test -e /usr/lib/apache2/modules/mod_security2.so
test -d /usr/share/modsecurity-crs
echo "apache: $(apache2 -v | head -1)"
