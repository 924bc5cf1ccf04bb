#!/usr/bin/env bash
# The embedded stack: one Celery worker (filesystem broker under the var folder) and the web server on 127.0.0.1:8000.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${GUARDTRACE_HOST:-127.0.0.1}
PORT=${GUARDTRACE_PORT:-8000}
VAR=${GUARDTRACE_VAR_DIR:-var}  # each instance its own: queue, logs, database
mkdir -p "$VAR"

DJANGO_SETTINGS_MODULE=guardtrace.settings .venv/bin/celery -A guardtrace worker -Q default,jury,gpu \
  --concurrency 3 --loglevel INFO --logfile "$VAR/celery-worker.log" &
WORKER=$!
stop() {
  trap - INT TERM EXIT
  echo "stopping worker and web server…"
  kill -TERM "$WORKER" 2>/dev/null || true
  [ -n "${WEB:-}" ] && kill -TERM "$WEB" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "GuardTrace Studio on http://$HOST:$PORT/ (worker log: $VAR/celery-worker.log). Ctrl-C stops it."
.venv/bin/gunicorn guardtrace.wsgi:application --bind "$HOST:$PORT" --workers 2 --access-logfile - \
  --control-socket "$VAR/gunicorn.ctl" &
WEB=$!
wait "$WEB"
