#!/usr/bin/env bash
# Start PostgreSQL and Redis if they are down (the prod-profile tests use them).
# On a machine without them installed this prints a note and carries on: those tests skip.
set -u
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
else
  echo "PostgreSQL client not installed: prod-profile tests will skip"
fi
if command -v redis-cli >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
else
  echo "Redis not installed: prod-profile tests will skip"
fi
exit 0
