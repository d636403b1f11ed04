# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite, as CI runs it).
# Everything the project needs is installed from here, so a fresh machine works.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup testbeds demo test lint bench clean docs

$(BIN)/marea: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,sim,htcondor,openstack,ec2,postgres,kubernetes]'
	touch $@

setup: $(BIN)/marea

testbeds:
	bash testbeds/slurm.sh install
	bash testbeds/postgres.sh install
	bash testbeds/podman.sh install
	bash testbeds/htcondor.sh install
	bash testbeds/openstack.sh install
	bash testbeds/guests.sh install
	bash testbeds/prometheus.sh install

demo: setup
	bash testbeds/slurm.sh install
	bash testbeds/postgres.sh install
	$(BIN)/marea demo

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup testbeds lint
	bash tests/run_suite.sh $(BIN)

# the generated docs: the configuration reference (a test fails when it is out of step with the models)
docs: setup
	$(BIN)/marea config reference > docs/configuration.md

bench: setup
	$(BIN)/python benchmarks/planner_cycle.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
