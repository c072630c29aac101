"""Config loading: `_base_` inheritance, `--set` overrides, validation errors, dump round trip."""

import os

import pytest
import yaml

from detect.config import DEFAULTS, dump_config, from_dict, load_config, validate
from detect.errors import DetectError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def base_and_variant(tmp_path):
    write(
        tmp_path / "base.yaml",
        "detector: faster_rcnn\n"
        "backbone: {name: vgg16, weights: imagenet}\n"
        "training: {epochs: 12, batch_size: 2, learning_rate: 0.001}\n"
        "rpn: {anchor_sizes: [128, 256, 512]}\n",
    )
    variant = write(
        tmp_path / "variant.yaml",
        "_base_: base.yaml\ntraining: {epochs: 3}\nbackbone: {name: tiny}\n",
    )
    return variant


def test_variant_overrides_two_keys_and_keeps_siblings(base_and_variant):
    config = load_config(base_and_variant)
    # Overridden by the variant.
    assert config["training"]["epochs"] == 3
    assert config["backbone"]["name"] == "tiny"
    # Siblings of the overridden keys come from the base, not from DEFAULTS.
    assert config["training"]["batch_size"] == 2
    assert config["training"]["learning_rate"] == 0.001
    assert config["backbone"]["weights"] == "imagenet"
    assert config["rpn"]["anchor_sizes"] == [128, 256, 512]
    # Keys neither file mentions are filled from DEFAULTS.
    assert config["training"]["optimizer"] == DEFAULTS["training"]["optimizer"]
    assert config["backbone"]["width"] == DEFAULTS["backbone"]["width"]
    assert "_base_" not in config


def test_base_chain_of_three_files(tmp_path, base_and_variant):
    leaf = write(tmp_path / "leaf.yaml", "_base_: variant.yaml\ntraining: {batch_size: 16}\n")
    config = load_config(leaf)
    assert (config["training"]["epochs"], config["training"]["batch_size"]) == (3, 16)
    assert config["backbone"]["weights"] == "imagenet"


def test_base_path_is_relative_to_the_variant_not_the_cwd(tmp_path, base_and_variant, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(base_and_variant)["training"]["epochs"] == 3


def test_defaults_do_not_leak_between_loads(base_and_variant):
    config = load_config(base_and_variant)
    config["rpn"]["anchor_ratios"].append(9.0)
    assert DEFAULTS["rpn"]["anchor_ratios"] == [0.5, 1.0, 2.0]
    assert load_config(base_and_variant)["rpn"]["anchor_ratios"] == [0.5, 1.0, 2.0]


def test_set_overrides_are_typed_by_yaml(base_and_variant):
    config = load_config(
        base_and_variant,
        [
            "training.epochs=5",
            "rpn.anchor_sizes=[16,32]",
            "backbone.weights=none",
            "training.learning_rate=0.5",
            "input.flip=false",
            "training.clipnorm=null",
        ],
    )
    assert config["training"]["epochs"] == 5 and type(config["training"]["epochs"]) is int
    assert config["rpn"]["anchor_sizes"] == [16, 32]
    # YAML's null is `null` / `~`; the word "none" stays a string (a backbone.weights choice).
    assert config["backbone"]["weights"] == "none"
    assert config["training"]["learning_rate"] == 0.5
    assert config["input"]["flip"] is False
    assert config["training"]["clipnorm"] is None
    # An override only touches its own key.
    assert config["training"]["batch_size"] == 2


def test_set_override_beats_the_variant_and_the_base(base_and_variant):
    config = load_config(base_and_variant, ["training.epochs=7", "training.batch_size=4"])
    assert (config["training"]["epochs"], config["training"]["batch_size"]) == (7, 4)


def test_set_value_may_contain_equals_sign(base_and_variant):
    config = load_config(base_and_variant, ["dataset.train.images=/data/a=b"])
    assert config["dataset"]["train"]["images"] == "/data/a=b"


def test_set_without_equals_sign_is_an_error(base_and_variant):
    with pytest.raises(DetectError, match=r"--set 'training\.epochs': expected key=value"):
        load_config(base_and_variant, ["training.epochs"])


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("trainng.epochs=5", "trainng", "training"),
        ("training.epoch=5", "training.epoch", "training.epochs"),
        ("rpn.anchor_size=[8]", "rpn.anchor_size", "rpn.anchor_sizes"),
    ],
)
def test_unknown_key_names_the_key_and_the_closest(base_and_variant, override, key, hint):
    with pytest.raises(DetectError) as info:
        load_config(base_and_variant, [override])
    message = str(info.value)
    assert f"unknown config key `{key}`" in message
    assert f"did you mean `{hint}`?" in message
    assert "\n" not in message


def test_unknown_key_without_close_match_has_no_hint(base_and_variant):
    with pytest.raises(DetectError) as info:
        load_config(base_and_variant, ["zzzzzz=1"])
    assert str(info.value) == "unknown config key `zzzzzz`"


def test_unknown_key_in_a_yaml_file(tmp_path):
    path = write(tmp_path / "c.yaml", "roi: {pool: align, sise: 7}\n")
    with pytest.raises(DetectError, match=r"`roi\.sise` \(did you mean `roi\.size`\?\)"):
        load_config(path)


def test_invalid_choice_lists_the_choices(base_and_variant):
    with pytest.raises(DetectError) as info:
        load_config(base_and_variant, ["training.optimizer=rmsprop"])
    assert str(info.value) == "config key `training.optimizer`: 'rmsprop' is not one of sgd, adam, adamw"


def test_min_size_above_max_size_is_an_error(base_and_variant):
    with pytest.raises(DetectError, match="input.min_size must not exceed input.max_size"):
        load_config(base_and_variant, ["input.min_size=800", "input.max_size=600"])


def test_number_key_given_a_word_is_an_error(base_and_variant):
    with pytest.raises(DetectError, match=r"config key `input\.min_size` must be an integer >= 1, got 'big'"):
        load_config(base_and_variant, ["input.min_size=big"])


def test_float_in_exponent_notation_is_accepted(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-3` as a string; a float key must still get 0.001.
    path = write(tmp_path / "c.yaml", "training: {learning_rate: 1e-3, weight_decay: 5E-4}\n")
    config = load_config(path)
    assert config["training"]["learning_rate"] == pytest.approx(0.001)
    assert config["training"]["weight_decay"] == pytest.approx(0.0005)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DetectError, match=f"config file not found: {missing}"):
        load_config(str(missing))


def test_missing_base_names_the_base_file(tmp_path):
    path = write(tmp_path / "c.yaml", "_base_: parent.yaml\n")
    with pytest.raises(DetectError, match="config file not found: .*parent.yaml"):
        load_config(path)


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "training: {epochs: 3\nrpn: [\n")
    with pytest.raises(DetectError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML")
    assert "\n" not in message


def test_base_loop_is_detected(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\nseed: 1\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\nseed: 2\n")
    with pytest.raises(DetectError, match="inheritance loops back"):
        load_config(str(tmp_path / "a.yaml"))


def test_file_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(DetectError, match="a config must be a YAML mapping"):
        load_config(path)


def test_empty_file_gives_the_defaults(tmp_path):
    config = load_config(write(tmp_path / "empty.yaml", ""))
    assert config == validate(from_dict({}))
    assert config["training"]["epochs"] == DEFAULTS["training"]["epochs"]


def test_section_given_a_scalar_is_an_error(tmp_path):
    path = write(tmp_path / "c.yaml", "training: 5\n")
    with pytest.raises(DetectError, match=r"config key `training` must be a mapping, got 5"):
        load_config(path)


def test_scalar_key_given_a_mapping_is_an_error(base_and_variant):
    with pytest.raises(DetectError, match=r"config key `training\.epochs` must not be a mapping"):
        load_config(base_and_variant, ["training.epochs.x=1"])


def test_free_form_callback_must_be_mapping_or_null(tmp_path):
    ok = write(tmp_path / "ok.yaml", "callbacks: {early_stopping: {patience: 2}, coco_map: null}\n")
    config = load_config(ok)
    assert config["callbacks"]["early_stopping"] == {"patience": 2}
    bad = write(tmp_path / "bad.yaml", "callbacks: {early_stopping: 3}\n")
    with pytest.raises(DetectError, match=r"`callbacks\.early_stopping` must be a mapping or null, got 3"):
        load_config(bad)


def test_base_that_is_not_a_path(tmp_path):
    path = write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\n")
    with pytest.raises(DetectError, match="`_base_` must be a file path"):
        load_config(path)


def test_dump_then_load_round_trip(tmp_path, base_and_variant):
    config = load_config(base_and_variant, ["rpn.anchor_sizes=[16,32]", "input.canvas=[96,128]"])
    out = tmp_path / "resolved.yaml"
    dump_config(config, str(out))
    assert not os.path.exists(f"{out}.tmp")
    assert load_config(str(out)) == config
    assert from_dict(yaml.safe_load(out.read_text())) == config


@pytest.mark.parametrize("name", ["base.yaml", "tiny_shapes.yaml"])
def test_shipped_faster_rcnn_configs_load(name):
    config = load_config(os.path.join(CONFIGS, "faster_rcnn", name))
    assert config["detector"] == "faster_rcnn"


def test_readme_train_line_reads_a_photo_folder_with_its_annotation_file(tmp_path, monkeypatch):
    """README "Train on your own images": the photos config with the README's --set values
    reads my_photos/annotations.json with the images beside it, and has no val split."""
    import json
    import shlex

    from PIL import Image

    from detect.data.splits import load_split

    readme = open(os.path.join(os.path.dirname(CONFIGS), "README.md"), encoding="utf-8").read()
    section = readme.split("## Train on your own images", 1)[1].split("\n## ", 1)[0]
    line = next(line for line in section.splitlines() if line.startswith("detect train "))
    words = shlex.split(line)
    overrides = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    photos = tmp_path / "my_photos"
    photos.mkdir()
    for name in ("IMG_0001.jpg", "IMG_0002.jpg"):
        Image.new("RGB", (64, 48), "gray").save(photos / name)
    (photos / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "IMG_0001.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "IMG_0002.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 16], "area": 320,
                         "iscrowd": 0}],
        "categories": [{"id": 7, "name": "cat"}],
    }))
    monkeypatch.chdir(tmp_path)
    config = load_config(os.path.join(os.path.dirname(CONFIGS), words[2]), overrides)
    assert config["backbone"]["name"] == "resnet50"
    train = load_split(config, "train")
    assert [r.path for r in train.records] == [str(photos / "IMG_0001.jpg"), str(photos / "IMG_0002.jpg")]
    assert list(train.classes) == ["cat"]
    assert load_split(config, "val") is None
