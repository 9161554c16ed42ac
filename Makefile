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
# Cut to fit 5 minutes on a quiet 2-core machine: 8-frame sample videos, TV-L1 without the ~20 s
# torch.compile warm-up (it pays off only on longer runs), and on the 64x64 toy videos (1.5 px
# motion) 3 pyramid levels and 2 warps instead of OpenCV's 5 and 5.
DEMO_SAMPLES = --frames 8
DEMO_FLOW = --no-compile
DEMO_TOY_FLOW = --no-compile --param nscales=3 --param warps=2
# Measured (README, "Two commands"): the steps take 160 CPU seconds with one thread per process,
# which bounds their wall time on a quiet 2-core machine (each step has a core to itself).
DEMO_MINUTES = 1.5

.PHONY: install demo demo-plan test bench gpu-check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo-plan:
	@echo "make demo: about $(DEMO_MINUTES) minutes on a quiet 2-core machine (longer while other processes share the CPU),"
	@echo "  after a one-time install into $(VENV) (torch, OpenCV, PyAV, ...: 2.0 GB in the dev venv). It will:"
	@echo "  1. write 8 short videos of photographs panned, zoomed and rotated by known motions -> $(DEMO)/videos"
	@echo "  2. extract their TV-L1 flow and RGB frames -> $(DEMO)/store, summarise it, draw $(DEMO)/flow.png"
	@echo "  3. write a toy action set (9 classes that differ only in motion, 8 videos each) -> $(DEMO)/toy"
	@echo "  4. extract its flow -> $(DEMO)/toy_store; train a tiny CIDC on it for 24 epochs -> $(DEMO)/run"
	@echo "  5. evaluate it on the held-out toy videos"

demo: demo-plan install
	@mkdir -p $(DEMO) && date +%s > $(DEMO)/.started
	$(FLOWKIT) samples $(DEMO)/videos $(DEMO_SAMPLES)
	$(FLOWKIT) extract $(DEMO)/videos -o $(DEMO)/store $(DEMO_FLOW)
	$(FLOWKIT) info $(DEMO)/store
	$(FLOWKIT) show $(DEMO)/store pan_left/pan_left_0 -o $(DEMO)/flow.png
	# Recognition: toy classes that differ only in motion -> TV-L1 store -> CIDC -> held-out accuracy.
	$(FLOWKIT) toy $(DEMO)/toy --videos-per-class 8 --overwrite
	$(FLOWKIT) extract $(DEMO)/toy -o $(DEMO)/toy_store $(DEMO_TOY_FLOW)
	$(FLOWKIT) train $(DEMO)/toy_store --model cidc $(DEMO_TRAIN) -o $(DEMO)/run --resume \
		--split-list $(DEMO)/toy/trainlist01.txt --val-fraction 0
	$(FLOWKIT) evaluate $(DEMO)/run $(DEMO)/toy_store --checkpoint last \
		--split-list $(DEMO)/toy/testlist01.txt
	@echo "make demo: done in $$(( $$(date +%s) - $$(cat $(DEMO)/.started) )) s (planned: about $(DEMO_MINUTES) minutes on a quiet 2-core machine)"

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_benchmarks.py

# On a GPU machine (no install needed, PyAV optional): OUT=dir make gpu-check
gpu-check:
	OUT=$${OUT:-gpu_check_out} benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info .pytest_cache
