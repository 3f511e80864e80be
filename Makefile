# The two commands a new user needs: `make serve` and `make test`.
PY := .venv/bin/python
# `make test` runs every test, so it installs the optional extras they exercise.
EXTRAS ?= test,pusht,ray

.PHONY: setup serve test
setup: .venv/.installed

.venv/.installed: pyproject.toml clients/python/pyproject.toml scripts/setup.sh
	EXTRAS=$(EXTRAS) ./scripts/setup.sh
	touch $@

serve: setup
	$(PY) -m server $(ARGS)

test: setup
	$(PY) -m pytest
