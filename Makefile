# Quick start: `make demo` (synthetic data -> train -> evaluate -> predict) and `make test`.
# The first target run creates .venv and installs the package; a changed setup.cfg reinstalls.
# `make test` also installs what only the tests need (the export and test extras, tidecv), so
# it runs every test; only Chromium (for the report.html render) comes from the system.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The PyTorch build for the torch case of tests/ops/test_dispatch.py: 2.13.0 is the CPU
# build pip finds on the project's machines; `make test TEST_TORCH=` skips torch (that case
# then skips, naming this target).
TEST_TORCH ?= torch==2.13.0
DEMO_MODEL := models/faster_rcnn_tiny_shapes
DEMO_CONFIG := configs/faster_rcnn/tiny_shapes.yaml

# torchvision itself, for the zoo parity tests (tests/zoo): its own venv, since PyPI's
# torchvision does not import beside the CPU build of torch above. These are the releases pip
# finds for Python 3.11 on the project's machines (x86_64: a CUDA build that runs on the CPU).
TORCHVISION_VENV := .venv-torchvision
TORCHVISION_STAMP := $(TORCHVISION_VENV)/.installed
TORCHVISION_PACKAGES ?= $(if $(filter aarch64,$(shell uname -m)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)

.PHONY: install install-test install-torchvision test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install-test: $(TEST_STAMP)

# The test extra (setup.cfg: the ONNX export packages, tidecv's imports, JAX for the
# cross-backend op tests), then PyTorch (TEST_TORCH), then tidecv itself
# with --no-deps: it declares opencv-python, whose cv2 would shadow opencv-contrib's (and its
# cv2.ximgproc, which selective search needs). The last line proves the contrib cv2 still wins.
$(TEST_STAMP): $(STAMP) setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[dev,test]'
	$(BIN)/python -m pip install --quiet --no-deps tidecv==1.0.1
	$(if $(TEST_TORCH),$(BIN)/python -m pip install --quiet '$(TEST_TORCH)')
	$(BIN)/python -c "import cv2, tidecv; assert hasattr(cv2, 'ximgproc'), 'opencv-python shadows opencv-contrib'"
	touch $(TEST_STAMP)

install-torchvision: $(TORCHVISION_STAMP)

$(TORCHVISION_STAMP):
	test -x $(TORCHVISION_VENV)/bin/python || $(PYTHON) -m venv $(TORCHVISION_VENV)
	$(TORCHVISION_VENV)/bin/python -m pip install --quiet $(TORCHVISION_PACKAGES) numpy pillow
	$(TORCHVISION_VENV)/bin/python -c "import torchvision.models.detection"
	touch $(TORCHVISION_STAMP)

test: $(TEST_STAMP) $(TORCHVISION_STAMP)
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
	rm -rf $(VENV) $(TORCHVISION_VENV) build *.egg-info
