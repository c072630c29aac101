"""Bad config values through the CLI (issue 18, item 3): one `error:` line naming the key,
the value and the range; exit code 2; nothing written."""

import pytest

from test_bad_inputs import assert_one_line_error, cli, shapes_coco, tiny_config


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("training.epochs=0", "`training.epochs` must be an integer >= 1, got 0"),
        ("training.epochs=-1", "`training.epochs` must be an integer >= 1, got -1"),
        ("training.epochs=1.5", "`training.epochs` must be an integer >= 1, got 1.5"),
        ("training.batch_size=0", "`training.batch_size` must be an integer >= 1, got 0"),
        ("rpn.anchor_sizes=abc", "`rpn.anchor_sizes` must be a list of numbers > 0, got 'abc'"),
    ],
)
def test_out_of_range_config_value_through_the_cli(tmp_path, override, fragment):
    train = shapes_coco(tmp_path / "train", 2)
    config = tiny_config(tmp_path / "config.yaml", train)
    result = cli("train", config, "--set", override, "--out", tmp_path / "model")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "model").exists()


def test_integer_learning_rate_is_accepted(tmp_path):
    from detect.config import load_config

    train = shapes_coco(tmp_path / "train", 2)
    config = load_config(tiny_config(tmp_path / "config.yaml", train), ["training.learning_rate=1"])
    assert config["training"]["learning_rate"] == 1.0
