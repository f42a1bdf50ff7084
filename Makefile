# Two commands set everything up: `make demo` (install + whole demo study) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := true
# Tests and the demo never download weights: a stray hub call fails at once.
export HF_HUB_OFFLINE := 1

.PHONY: install demo test viz clean-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# facenet-pytorch pins torch<2.3 but runs on current torch; its MTCNN weights ship in the wheel.
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $@

# The demo is a simulation study: it ends by printing which planted effects the study recovered (docs/demo.md).
demo: install
	$(BIN)/kedro run --env demo
	@# The study ran; a missed planted effect is a finding of the simulation (docs/demo.md), not a failed command.
	@$(BIN)/python -m deepfake_kedro.demo_check data/demo/08_reporting/demo_check.csv \
		|| echo "Not every planted effect was recovered: docs/demo.md says which and why."

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

viz: install
	$(BIN)/kedro viz run --env demo
