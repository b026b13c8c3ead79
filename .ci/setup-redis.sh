#!/usr/bin/env bash
# Redis for the rate-limit tests (tests/redis_limits.rs, tests/e2e/limits_policy.rs): they need
# a real Redis at 127.0.0.1:6379 and fail without one. The rust-svc machine starts it before a
# session or CI run; this starts it again only if it is not answering.
set -euo pipefail
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "redis: running"
  exit 0
fi
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && apt-get install -y -qq redis-server
fi
mkdir -p /var/lib/redis /var/log/redis
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log
for _ in $(seq 1 50); do
  redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && { echo "redis: started"; exit 0; }
  sleep 0.1
done
echo "redis: did not start" >&2
exit 1
