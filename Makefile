# The two commands a new user needs: `make serve` and `make test`.
PY := .venv/bin/python

.PHONY: setup serve test
setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	./scripts/setup.sh
	touch $@

serve: setup
	$(PY) -m server $(ARGS)

test: setup
	$(PY) -m pytest
