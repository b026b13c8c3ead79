#!/usr/bin/env bash
# The store tests (tests/store.rs, tests/subscriptions.rs) need PostgreSQL at 127.0.0.1:5432 with
# trust auth and a database `test` (GATEHOUSE_TEST_PG overrides the URL). This machine kind
# starts it before a session; this script starts it again if it has stopped, and makes sure the
# database exists. The tests fail (not skip) without it.
set -euo pipefail

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "== starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
fi
pg_isready -h 127.0.0.1 -p 5432
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test'
fi
