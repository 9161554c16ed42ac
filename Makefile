# The README's two commands: `make demo` (install + the main job on sample videos) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FLOWKIT := $(VENV)/bin/flowkit
# Installed before flowkit, pinned: left to itself pip would resolve a multi-GB CUDA build of torch.
TORCH_VERSION ?= 2.13.0
DEMO ?= demo

.PHONY: install demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(FLOWKIT) samples $(DEMO)/videos
	$(FLOWKIT) extract $(DEMO)/videos -o $(DEMO)/store
	$(FLOWKIT) info $(DEMO)/store
	$(FLOWKIT) show $(DEMO)/store pan_left/pan_left_0 -o $(DEMO)/flow.png

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_benchmarks.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info .pytest_cache
