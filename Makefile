# The two set-up commands: `make demo` and `make test`. Each creates the virtual
# environment (.venv) and installs keras-cam into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed-stamp

.PHONY: demo test test-slow bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keras-cam demo

# Two pytest workers (pytest-xdist): most tests wait on process start-up and small
# training runs, so two of them share the 2-core CI machine well (~10 min instead of ~15).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Speed benchmarks of issue 4 (results in BENCHMARKS.md; ~30 min on 2 cores). They need
# ../shared (real photos and weights) and skip without it. tf-keras-vis, the peer they
# compare with, is installed here for the comparison only: never a keras-cam dependency.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet "tf-keras-vis==0.8.7"
	$(BIN)/python benchmarks/infer_speed.py
	$(BIN)/python benchmarks/infer_speed.py --backbone resnet50 --sides forward,infer,split
	$(BIN)/python benchmarks/make_large_photos.py --out /tmp/keras_cam_large_photos
	$(BIN)/python benchmarks/infer_speed.py --photos /tmp/keras_cam_large_photos --images 64 --rounds 8 --sides forward,infer,decode
	$(BIN)/python benchmarks/peers.py --rounds 3
	$(BIN)/python benchmarks/peers.py --batch-size 1 --images 8
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/precision.py --backbone resnet50

clean:
	rm -rf demo_output experiments .pytest_cache
