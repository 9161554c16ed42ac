# The README's two commands: `make demo` (install + the main job on sample videos) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FLOWKIT := $(VENV)/bin/flowkit
# Installed before flowkit, pinned: left to itself pip would resolve a multi-GB CUDA build of torch.
TORCH_VERSION ?= 2.13.0
DEMO ?= demo
# The recipe of benchmarks/recognition.py: a tiny CIDC on TV-L1 flow, whole 16-frame toy videos.
DEMO_TRAIN = --model-arg modality=flow --model-arg width=8 --model-arg 'layers=[1,1,1,1]' \
	--frames 16 --size 48 --no-flip --optimizer adamw --lr 0.003 --weight-decay 0.01 \
	--warmup-epochs 1 --epochs 24 --workers 0

.PHONY: install demo test bench gpu-check clean

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
	# Recognition: toy classes that differ only in motion -> TV-L1 store -> CIDC -> held-out accuracy.
	$(FLOWKIT) toy $(DEMO)/toy --videos-per-class 8 --overwrite
	$(FLOWKIT) extract $(DEMO)/toy -o $(DEMO)/toy_store
	$(FLOWKIT) train $(DEMO)/toy_store --model cidc $(DEMO_TRAIN) -o $(DEMO)/run --resume \
		--split-list $(DEMO)/toy/trainlist01.txt --val-fraction 0
	$(FLOWKIT) evaluate $(DEMO)/run $(DEMO)/toy_store --checkpoint last \
		--split-list $(DEMO)/toy/testlist01.txt

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_benchmarks.py

# On a GPU machine (no install needed, PyAV optional): OUT=dir make gpu-check
gpu-check:
	OUT=$${OUT:-gpu_check_out} benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info .pytest_cache
