# The two commands (see README): `make run` runs the pipeline on the embedded default, `make test` the
# checks. Both set everything up first (idempotent; the first time takes a few minutes).
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup run test lint register
setup:
	@scripts/bootstrap.sh

run: setup
	@$(ENV) pyflyte run workflows/qsave.py qsave_pipeline $(ARGS)

lint: setup
	@$(ENV) ruff check . && ruff format --check . && mypy

test: lint
	@$(ENV) pytest -q $(ARGS)

# Register every workflow and launch plan on a Flyte cluster, versioned by the git commit (README: cluster).
register: setup
	@$(ENV) scripts/register.sh $(ARGS)
