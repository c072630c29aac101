"""Shared fixtures."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Tests write the toolkit's caches (image headers, ...) into a temporary folder, not
    into the user's ~/.cache/detect."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECT_CACHE_DIR", str(tmp_path_factory.mktemp("detect-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def make_model_dir(tmp_path_factory):
    """Factory: an untrained tiny Faster R-CNN model folder (model.keras + config.yaml)
    for the given class names, in `folder` or a new temporary one; returns its Path."""
    from detect.config import dump_config, from_dict
    from detect.models.registry import build_model

    def make(classes, folder=None):
        folder = folder or tmp_path_factory.mktemp("model")
        folder.mkdir(parents=True, exist_ok=True)
        config = from_dict(
            {
                "backbone": {"name": "tiny", "width": 8},
                "input": {"min_size": 64, "max_size": 64},
                "rpn": {"anchor_sizes": [16, 32], "channels": 16, "post_nms_top_n_test": 20},
                "roi": {"head_dim": 32},
                "test": {"score_threshold": 0.0, "max_detections": 5},
            }
        )
        build_model(config, list(classes)).save(str(folder / "model.keras"))
        dump_config(config, str(folder / "config.yaml"))
        return folder

    return make
