"""COCO files with values of the wrong type or duplicate category names (issue 18, items 2
and 6): the same one-line error from inspect, train and evaluate, naming the file and the
annotation id or both category ids."""

import json

import pytest
import yaml

from test_bad_inputs import assert_one_line_error, cli, shapes_coco, tiny_config


def _edit(path, change):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    change(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _set_annotation(key, value):
    def change(data):
        data["annotations"][1][key] = value  # annotation id 2

    return change


def _duplicate_name(data):
    data["categories"][1]["name"] = data["categories"][0]["name"]  # ids 1 and 2 both "a"


CASES = {
    "iscrowd_string": (_set_annotation("iscrowd", "0"), ["annotation id 2", "iscrowd must be the number 0 or 1", "'0'"]),
    "iscrowd_two": (_set_annotation("iscrowd", 2), ["annotation id 2", "iscrowd must be the number 0 or 1, got 2"]),
    "bbox_strings": (_set_annotation("bbox", ["10", "10", "5", "5"]), ["annotation id 2", "needs a bbox of 4 numbers"]),
    "duplicate_name": (_duplicate_name, ["category name 'a' is used by ids 1 and 2"]),
}


def _commands(tmp_path, path):
    """The three ways a COCO file is read: inspect, train, evaluate --annotations."""
    config = tiny_config(tmp_path / "config.yaml", path)
    detections = tmp_path / "dets.json"
    detections.write_text("[]", encoding="utf-8")
    return {
        "inspect": ["data", "inspect", "--format", "coco", "--annotations", path],
        "train": ["train", config, "--out", tmp_path / "model"],
        "evaluate": ["evaluate", "--detections", detections, "--annotations", path, "--out", tmp_path / "eval"],
    }


@pytest.mark.parametrize("command", ["inspect", "train", "evaluate"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_coco_value_is_one_error_in_every_command(tmp_path, case, command):
    path = shapes_coco(tmp_path / "data", 3)
    change, fragments = CASES[case]
    _edit(path, change)
    result = cli(*_commands(tmp_path, path)[command])
    assert_one_line_error(result, "annotations.json", *fragments)
    assert not (tmp_path / "model").exists() and not (tmp_path / "eval").exists()


def test_evaluate_with_a_model_reads_the_split_with_the_same_rules(tmp_path, make_model_dir):
    model_dir = make_model_dir(["a", "b"])
    path = shapes_coco(tmp_path / "data", 2)
    _edit(path, _duplicate_name)
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"val": {"annotations": path}}, "input": {"min_size": 64, "max_size": 64}}))
    result = cli("evaluate", model_dir, "--config", config, "--out", tmp_path / "eval")
    assert_one_line_error(result, "annotations.json", "category name 'a' is used by ids 1 and 2")
    assert not (tmp_path / "eval").exists()
