#!/usr/bin/env bash
# The dashboard test: Debian's Chromium and npm's playwright-core (which downloads no
# browser of its own), then the test itself against the debug binary. Run from the repo root
# after `cargo build` (or `cargo test`, which builds target/debug/gatehouse too).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
(cd tests/dashboard && npm install --no-audit --no-fund --silent)
cargo build --locked --bin gatehouse
node --test tests/dashboard/dashboard.test.mjs
