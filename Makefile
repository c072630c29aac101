# Quick start: `make demo` (synthetic data -> train -> evaluate -> predict) and `make test`.
# The first target run creates .venv and installs the package; a changed setup.cfg reinstalls.
# `make test` also installs what only the tests need (the export and test extras, tidecv), so
# it runs every test; only Chromium (for the report.html render) comes from the system.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# PyTorch and torchvision for the tests: the torch backend's ops and training
# (tests/ops/test_dispatch.py, tests/models/test_backends.py: torchvision's NMS and RoIAlign
# kernels there) and the model-zoo parity tests (tests/zoo: torchvision builds the reference
# models). These are the releases pip finds for Python 3.11 on the project's machines
# (x86_64: a CUDA build, which runs on the CPU); `make test TEST_TORCH=` skips torch (those
# tests then skip, naming this target).
TEST_TORCH ?= $(if $(filter aarch64,$(shell uname -m)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)
DEMO_MODEL := models/faster_rcnn_tiny_shapes
DEMO_CONFIG := configs/faster_rcnn/tiny_shapes.yaml

.PHONY: install install-test test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install-test: $(TEST_STAMP)

# The test extra (setup.cfg: the ONNX export packages, tidecv's imports, JAX for the
# cross-backend op tests), then PyTorch and torchvision (TEST_TORCH), then tidecv itself
# with --no-deps: it declares opencv-python, whose cv2 would shadow opencv-contrib's (and its
# cv2.ximgproc, which selective search needs). The last line proves the contrib cv2 still wins.
$(TEST_STAMP): $(STAMP) setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[dev,test]'
	$(BIN)/python -m pip install --quiet --no-deps tidecv==1.0.1
	$(if $(TEST_TORCH),$(BIN)/python -m pip install --quiet $(TEST_TORCH))
	$(BIN)/python -c "import cv2, tidecv; assert hasattr(cv2, 'ximgproc'), 'opencv-python shadows opencv-contrib'"
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/detect data shapes --out data/shapes --num-images 1000 --image-size 128 --seed 0
	$(BIN)/detect data inspect --format coco --annotations data/shapes/annotations/train.json \
		--images data/shapes/images --plot data/shapes/train_grid.png
	$(BIN)/detect train $(DEMO_CONFIG) --out $(DEMO_MODEL)
	$(BIN)/detect evaluate $(DEMO_MODEL) --config $(DEMO_CONFIG) --split val
	$(BIN)/detect predict $(DEMO_MODEL) data/shapes/images/val --out $(DEMO_MODEL)/predictions
	@echo "demo outputs: data/shapes (dataset), $(DEMO_MODEL) (model, history, metrics, predictions)"

bench: $(STAMP)
	$(BIN)/detect benchmark --detectors rcnn,fast_rcnn,faster_rcnn --backbone tiny --out runs/benchmark

clean:
	rm -rf $(VENV) build *.egg-info
