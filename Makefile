# Two commands set everything up: `make demo` (install + whole demo study) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := true
# Tests and the demo never download weights: a stray hub call fails at once.
export HF_HUB_OFFLINE := 1

.PHONY: install demo test viz gpu-kit

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
	@echo "The study's map (datasets hidden): http://127.0.0.1:4141/?pid=__default__&types=task,modularPipeline"
	$(BIN)/kedro viz run --env demo --include-hooks

# What a lent GPU machine lacks to run benchmarks/gpu_check.sh (docs/benchmarks.md): wheels for its Python 3.12,
# fetched here (it has no network), and the shared limit script. Its image has torch, timm, numpy, pandas,
# scikit-learn, matplotlib, ... already; these are the rest `kedro run --env demo --pipelines phase1` imports
# (tracking off). grad-cam ships only as an sdist, so its wheel is built here. Carry .gpu_kit in the device call.
GPU_KIT_WHEELS := kedro==1.7.0 kedro-datasets==9.6.0 omegaconf==2.4.0 dynaconf==3.3.5 parse==1.22.4 \
	more-itertools==11.2.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	typing-extensions==4.16.0 ImageHash==4.3.2 facenet-pytorch==2.6.0 ttach==0.0.3
gpu-kit: install
	rm -rf .gpu_kit && mkdir -p .gpu_kit
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .gpu_kit $(GPU_KIT_WHEELS)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w .gpu_kit grad-cam==1.5.7
	cp ../shared/tools/gpu_limit.py .gpu_kit/
	@du -sh .gpu_kit
