#!/usr/bin/env bash
# Installs the real OpenID provider (npm `oidc-provider`, pinned in tests/oidc/package-lock.json)
# that the validate-jwt end-to-end tests start on loopback. Needs Node.js >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
cd tests/oidc
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
node --version
