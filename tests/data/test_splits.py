"""Config -> data glue: pad colour per backbone, proposals of any split (test included)."""

import numpy as np
import pytest
from PIL import Image

from detect.config import from_dict
from detect.data.records import Dataset, Record, write_coco
from detect.data.splits import load_split, pad_value, pipeline, proposals_for
from detect.errors import DetectError
from detect.models.backbones import PixelNormalization, build_backbone
from detect.proposals.cache import write_proposals


@pytest.mark.parametrize("name", ["tiny", "vgg16"])
def test_padding_is_zero_after_the_backbones_normalization(name):
    trunk = build_backbone(name, weights="none", head_dim=8, width=4)[0]
    (norm,) = [layer for layer in trunk.layers if isinstance(layer, PixelNormalization)]
    canvas = np.broadcast_to(np.asarray(pad_value(name), np.float32), (1, 4, 4, 3))
    np.testing.assert_allclose(np.asarray(norm(canvas)), 0.0, atol=1e-4)


def test_unknown_backbone_has_no_pad_value():
    with pytest.raises(DetectError, match="no pixel mean known for 'vgg19'"):
        pad_value("vgg19")


@pytest.fixture
def test_split(tmp_path):
    return _test_split(tmp_path)


def _test_split(tmp_path):
    """A COCO 'test' split of two images, its proposal file and a Fast R-CNN config."""
    (tmp_path / "images").mkdir()
    records = []
    for i, (h, w) in enumerate([(40, 60), (60, 40)], start=1):
        Image.new("RGB", (w, h)).save(tmp_path / "images" / f"{i}.png")
        records.append(Record(i, f"{i}.png", str(tmp_path / "images" / f"{i}.png"), w, h,
                              boxes=[[2, 2, 20, 30]], labels=[1]))
    dataset = Dataset(["thing"], records)
    write_coco(dataset, tmp_path / "test.json")
    props = write_proposals(tmp_path / "test_props.npz", dataset,
                            [(r.image_id, [[1, 1, 10, 10], [5, 5, 30, 30]]) for r in records], {"source": "test"})
    config = from_dict({
        "detector": "fast_rcnn",
        "dataset": {"test": {"annotations": str(tmp_path / "test.json"), "images": str(tmp_path / "images")}},
        "input": {"min_size": 32, "max_size": 64},
        "proposals": {"test": str(props), "max_proposals": 5},
    })
    return config


def test_fast_rcnn_pipeline_reads_proposals_of_the_test_split(test_split):
    dataset = load_split(test_split, "test")
    batches = list(pipeline(test_split, dataset, training=False, batch_size=2, split="test"))
    # 60 x 40 (w x h) is landscape, 40 x 60 portrait: one batch each, on the landscape
    # canvas min 32 x max 64 and its transpose.
    assert sorted(tuple(b["images"].shape[1:3]) for b in batches) == [(32, 64), (64, 32)]
    for batch in batches:
        # 2 proposals stored, min(file max 2, proposals.max_proposals 5) = 2 rows;
        # scale 32/40 = 0.8: [1, 1, 10, 10] -> [0.8, 0.8, 8, 8].
        assert batch["proposals"].shape == (1, 2, 4)
        np.testing.assert_allclose(batch["proposals"][0, 0], [0.8, 0.8, 8, 8], rtol=1e-5)
        # Padding is the tiny backbone's mean colour.
        h, w = batch["image_shape"][0]
        assert np.all(batch["images"][0, h:, :] == 127.5) and np.all(batch["images"][0, :, w:] == 127.5)


def test_unset_test_proposals_name_the_key(test_split):
    config = {**test_split, "proposals": {**test_split["proposals"], "test": None}}
    dataset = load_split(config, "test")
    with pytest.raises(DetectError, match=r"proposals.test is not set.*--split test"):
        proposals_for(config, dataset, "test")


def test_detect_evaluate_split_test_with_proposals(tmp_path):
    """`detect evaluate MODEL --split test` for Fast R-CNN reads proposals.test."""
    from click.testing import CliRunner

    from detect.cli import main
    from detect.config import dump_config
    from detect.models.registry import build_model

    config = _test_split(tmp_path)
    config["backbone"]["width"] = 8
    config["roi"]["head_dim"] = 16
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    build_model(config, ["thing"]).save(str(model_dir / "model.keras"))
    dump_config({**config, "dataset": {**config["dataset"], "class_names": ["thing"]}}, str(model_dir / "config.yaml"))
    result = CliRunner().invoke(main, ["evaluate", str(model_dir), "--split", "test", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "metrics.json").is_file()
    # Without proposals.test: one error line naming the key, no traceback.
    config["proposals"]["test"] = None
    dump_config({**config, "dataset": {**config["dataset"], "class_names": ["thing"]}}, str(model_dir / "config.yaml"))
    result = CliRunner().invoke(main, ["evaluate", str(model_dir), "--split", "test", "--out", str(tmp_path / "eval2")])
    assert result.exit_code != 0
    assert "proposals.test is not set" in result.output and "Traceback" not in result.output
