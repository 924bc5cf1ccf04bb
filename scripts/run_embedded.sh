#!/usr/bin/env bash
# The embedded stack: three Celery workers (filesystem broker under the var folder) and the web server on 127.0.0.1:8000.
# Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${GUARDTRACE_HOST:-127.0.0.1}
PORT=${GUARDTRACE_PORT:-8000}
VAR=${GUARDTRACE_VAR_DIR:-var}  # each instance its own: queue, logs, database
mkdir -p "$VAR"

# Three workers, so no kind of work waits behind another: imports, exports and expansions (`default`); jury runs,
# guard jobs and training rounds (`jury`, `gpu`); the audit API's inference (`audit`, one model kept loaded).
worker() {  # name, queues, concurrency
  DJANGO_SETTINGS_MODULE=guardtrace.settings .venv/bin/celery -A guardtrace worker -n "$1@%h" -Q "$2" \
    --concurrency "$3" --loglevel INFO --logfile "$VAR/celery-$1.log" &
  WORKERS="${WORKERS:-} $!"
}
worker default default 2
worker work jury,gpu 2
worker audit audit 1
stop() {
  trap - INT TERM EXIT
  echo "stopping worker and web server…"
  # shellcheck disable=SC2086
  kill -TERM $WORKERS 2>/dev/null || true
  [ -n "${WEB:-}" ] && kill -TERM "$WEB" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "GuardTrace Studio on http://$HOST:$PORT/ (worker logs: $VAR/celery-*.log). Ctrl-C stops it."
# Threads: a request waiting on the audit worker or a model endpoint holds a thread, not a whole process.
.venv/bin/gunicorn guardtrace.wsgi:application --bind "$HOST:$PORT" --workers 2 --worker-class gthread --threads 8 \
  --access-logfile - \
  --control-socket "$VAR/gunicorn.ctl" &
WEB=$!
wait "$WEB"
