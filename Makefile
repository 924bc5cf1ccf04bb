# GuardTrace Studio: `make run` (demo on 127.0.0.1:8000) and `make test` (whole suite). Both install what is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test install browser lint audit backup restore bench-quick soak soak-quick vendor-htmx vendor-uplot clean

install: $(STAMP)

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used). Installed when
# missing and apt-get can run; without it those tests are reported as skipped (as failed under CI).
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
	      || echo "could not install chromium: the browser tests will not run"; \
	  else echo "$(CHROMIUM) is missing: apt-get install chromium chromium-driver to run the browser tests"; fi; }

# torch==2.13.0 first: it takes the CPU wheel; an unpinned torch pulled in by transformers would bring CUDA.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[ml,dev,prod]'
	@touch $@

# The demo's aligned images use the tiny sentence model `demo_generation` builds, unless one is configured.
run: export GUARDTRACE_EMBEDDING_MODEL ?= $(or $(GUARDTRACE_VAR_DIR),$(CURDIR)/var)/models/tiny-embedder
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py demo_setup
	$(PY) manage.py demo_guard
	$(PY) manage.py demo_jury
	$(PY) manage.py demo_training
	$(PY) manage.py demo_generation
	bash scripts/run_embedded.sh

test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy qta common annotation experts guardtrace guardmodel jury training generation demo

# Known vulnerabilities in the installed packages (pip-audit); says plainly when its service cannot be reached.
audit: $(STAMP)
	$(PY) scripts/audit_deps.py

# The database and the media folder into one archive under GUARDTRACE_BACKUP_DIR (default var/backups), and back
# into a fresh instance: `make restore ARCHIVE=guardtrace-….tar.gz` (FORCE=1 replaces an instance holding data).
backup: $(STAMP)
	$(PY) manage.py backup

restore: $(STAMP)
	@test -n "$(ARCHIVE)" || { echo "usage: make restore ARCHIVE=<archive name or path> [FORCE=1]"; exit 2; }
	$(PY) manage.py restore "$(ARCHIVE)" $(if $(FORCE),--force)

# Every benchmark once with --quick, a smoke run (BENCHMARKS.md's figures come from full runs). The ones whose
# docstring says so need PostgreSQL in DATABASE_URL (jury_workers also a redis-server binary); the rest run anywhere.
BENCHES := $(sort $(filter-out bench/_% bench/soak_% bench/locustfile.py,$(wildcard bench/*.py)))
bench-quick: $(STAMP)
	@failed=; for bench in $(BENCHES); do echo "== $$bench --quick"; \
	  $(PY) $$bench --quick || failed="$$failed $$bench"; done; \
	  if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

# Soak runs on the production-like stack (not run by CI): fault injection, then 10 minutes of locust load. They need
# PostgreSQL (SOAK_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres; databases soak and soak_load
# are dropped and made again) and redis-server on the PATH (their own on SOAK_REDIS_PORT, default 6390).
soak: $(STAMP)
	$(PY) bench/soak_faults.py
	$(PY) bench/soak_load.py

soak-quick: $(STAMP)
	$(PY) bench/soak_faults.py --quick
	$(PY) bench/soak_load.py --quick

vendor-htmx:
	cd /tmp && npm pack htmx.org@2.0.8 && tar xzf htmx.org-2.0.8.tgz && cp package/dist/htmx.min.js package/LICENSE $(CURDIR)/static/vendor/htmx/

# uPlot draws the training run page's curves: its browser build, style sheet and licence, from the npm package.
UPLOT_VERSION := 1.6.32
vendor-uplot:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack uplot@$(UPLOT_VERSION) && tar xzf uplot-$(UPLOT_VERSION).tgz \
	  && mkdir -p $(CURDIR)/static/vendor/uplot \
	  && cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE $(CURDIR)/static/vendor/uplot/ \
	  && echo "uplot $(UPLOT_VERSION), dist/uPlot.iife.min.js and dist/uPlot.min.css from the npm package (refresh: make vendor-uplot)" \
	    > $(CURDIR)/static/vendor/uplot/VERSION \
	  && rm -rf $$tmp

clean:
	rm -rf var/staticfiles var/celery
