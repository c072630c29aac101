"""A retrain into a folder that holds a model (issue 18, item 1): another config is refused
before anything is written, so a crash can never pair the old model.keras with a new
config.yaml; `--overwrite` replaces the run; the same config resumes / reruns as before."""

import os

from test_bad_inputs import assert_one_line_error, cli, shapes_coco, tiny_config


def _snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_other_config_is_refused_and_the_folder_is_byte_identical(tmp_path, make_model_dir):
    model = make_model_dir(["a", "b"], tmp_path / "model")  # model.keras + config.yaml
    before = _snapshot(model)
    train = shapes_coco(tmp_path / "train", 8)
    config = tiny_config(tmp_path / "config.yaml", train)
    result = cli("train", config, "--out", model)
    line = assert_one_line_error(result, str(model), "holds a model trained with another config", "--overwrite")
    assert "dataset.train.annotations: None -> " in line
    assert _snapshot(model) == before


def test_interrupted_run_state_counts_as_a_model(tmp_path):
    model = tmp_path / "model"
    (model / "backup").mkdir(parents=True)
    (model / "backup" / "latest.weights.h5").write_bytes(b"weights of another run")
    (model / "config.yaml").write_text("detector: faster_rcnn\ninput: {min_size: 96, max_size: 96}\n")
    before = _snapshot(model)
    train = shapes_coco(tmp_path / "train", 8)
    result = cli("train", tiny_config(tmp_path / "config.yaml", train), "--out", model)
    # config.yaml leaves backbone.width at its default 32; tiny_config sets 8.
    assert_one_line_error(result, "backbone.width: 32 -> 8")
    assert _snapshot(model) == before


def test_same_config_reruns_and_overwrite_replaces(tmp_path):
    train = shapes_coco(tmp_path / "train", 8)
    config = tiny_config(tmp_path / "config.yaml", train)
    model = tmp_path / "model"
    assert cli("train", config, "--out", model).exit_code == 0
    saved = (model / "config.yaml").read_bytes()
    # The same command again: accepted, config.yaml untouched.
    result = cli("train", config, "--out", model)
    assert result.exit_code == 0, result.output
    assert (model / "config.yaml").read_bytes() == saved
    # Another input size: refused; with --overwrite the new config and a new model.
    result = cli("train", config, "--set", "input.min_size=48", "--set", "input.max_size=48", "--out", model)
    assert_one_line_error(result, "input.min_size: 64 -> 48")
    assert (model / "config.yaml").read_bytes() == saved
    result = cli("train", config, "--set", "input.min_size=48", "--set", "input.max_size=48", "--out", model,
                 "--overwrite")
    assert result.exit_code == 0, result.output
    assert "min_size: 48" in (model / "config.yaml").read_text()
    assert (model / "model.keras").exists()


def test_model_folder_differences_are_listed_in_key_order():
    from detect.training.model_folder import config_differences

    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}}
    new = {"a": 1, "b": {"c": [1, 3], "d": "y"}, "e": 5}
    assert config_differences(old, new) == [("b.c", [1, 2], [1, 3]), ("b.d", "x", "y"), ("e", "<unset>", 5)]
    # a mapping where the other side has none is compared key by key
    assert config_differences({"f": None}, {"f": {"g": 1}}) == [("f.g", "<unset>", 1)]
