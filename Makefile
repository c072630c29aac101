# Quick start: `make demo` (synthetic data -> train -> evaluate -> predict) and `make test`.
# The first target run creates .venv and installs the package; a changed setup.cfg reinstalls.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_MODEL := models/faster_rcnn_tiny_shapes
DEMO_CONFIG := configs/faster_rcnn/tiny_shapes.yaml

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
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
