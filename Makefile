PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test processes: one per core (the tests pin torch to one thread each).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test install system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml scripts/install_torch.sh | $(BIN)/python
	bash scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	# open_clip's tokenizer is the reference in tests/engine/model/test_offline_tokenizers.py; --no-deps
	# because its package pulls torchvision (never installed here); the test loads only tokenizer.py
	$(BIN)/python -m pip install -q --no-deps open-clip-torch==3.3.0
	touch $@

install: $(VENV)/.installed

# tmux drives the real terminal app in one test.
system-deps:
	@command -v tmux >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q tmux) || echo "tmux not installed: the tmux test will be skipped"

demo: install
	$(BIN)/sdxl-tui demo

# --dist loadfile: a test module runs on one worker, so the runs its module fixtures share are trained once
test: install system-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30
