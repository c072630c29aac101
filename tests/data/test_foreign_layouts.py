"""`detect data convert` on layouts other tools write: LabelMe JSONs whose imagePath is a
bare file name with the images in another folder (globox, export scripts), a YOLO dataset
folder given in place of its data.yaml, and an output path that is an existing folder."""

import json
import os

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from pycocotools.coco import COCO

from detect.cli import main
from detect.data.labelme import load_labelme
from detect.data.splits import load_split


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _globox_style(tmp_path):
    """IMAGES/{astronaut,sub/coffee}.jpg and LABELME/{astronaut,sub/coffee}.json with bare
    imagePaths, as globox's LabelMe writer saves them (imagePath = the image id)."""
    images, labelme = tmp_path / "IMAGES", tmp_path / "LABELME"
    (images / "sub").mkdir(parents=True)
    (labelme / "sub").mkdir(parents=True)
    for name, size, box in (("astronaut", (64, 48), [[4, 6], [30, 40]]), ("sub/coffee", (40, 50), [[1, 2], [20, 30]])):
        Image.new("RGB", size, (90, 120, 150)).save(images / f"{name}.jpg")
        data = {"version": "5.0.1", "flags": {}, "imagePath": f"{os.path.basename(name)}.jpg", "imageData": None,
                "imageWidth": size[0], "imageHeight": size[1],
                "shapes": [{"label": "person", "points": box, "shape_type": "rectangle", "group_id": None, "flags": {}}]}
        (labelme / f"{name}.json").write_text(json.dumps(data))
    return images, labelme


def test_labelme_bare_image_paths_resolve_in_the_images_folder(tmp_path):
    images, labelme = _globox_style(tmp_path)
    out = tmp_path / "out.json"
    result = _run("data", "convert", "--from", "labelme", "--images", images, labelme, out)
    assert result.exit_code == 0, result.output
    coco = COCO(str(out))
    names = sorted(image["file_name"] for image in coco.loadImgs(coco.getImgIds()))
    # astronaut.json -> IMAGES/astronaut.jpg; sub/coffee.json -> IMAGES/sub/coffee.jpg
    # (IMAGES/<sub>/<imagePath>); names relative to IMAGES.
    assert names == ["astronaut.jpg", "sub/coffee.jpg"]
    (astronaut,) = [i for i in coco.loadImgs(coco.getImgIds()) if i["file_name"] == "astronaut.jpg"]
    # rectangle (4, 6)-(30, 40) -> xywh (4, 6, 26, 34)
    assert [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[astronaut["id"]]))] == [[4.0, 6.0, 26.0, 34.0]]
    assert f"image names relative to {images}" in result.output


def test_labelme_without_images_still_names_the_json_folder_path(tmp_path):
    _, labelme = _globox_style(tmp_path)
    result = _run("data", "convert", "--from", "labelme", labelme, tmp_path / "out.json")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert str(labelme / "astronaut.jpg") in result.output and "Traceback" not in result.output


def test_labelme_image_beside_the_json_when_not_in_the_images_folder(tmp_path):
    images, labelme = _globox_style(tmp_path)
    os.replace(images / "astronaut.jpg", labelme / "astronaut.jpg")
    dataset = load_labelme(str(labelme), images=str(images))
    paths = sorted(record.path for record in dataset.records)
    assert paths == [str(images / "sub" / "coffee.jpg"), str(labelme / "astronaut.jpg")]


def test_labelme_images_folder_from_a_config_split(tmp_path):
    images, labelme = _globox_style(tmp_path)
    config = {"dataset": {"format": "labelme", "train": {"annotations": str(labelme), "images": str(images)}}}
    dataset = load_split(config, "train")
    assert [record.path for record in dataset.records] == [str(images / "astronaut.jpg"), str(images / "sub" / "coffee.jpg")]
    np.testing.assert_array_equal(dataset.records[1].boxes, [[1, 2, 20, 30]])


def test_labelme_missing_images_folder_is_one_line(tmp_path):
    _, labelme = _globox_style(tmp_path)
    result = _run("data", "convert", "--from", "labelme", "--images", tmp_path / "nope", labelme, tmp_path / "o.json")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: image folder not found: {tmp_path / 'nope'}"


@pytest.mark.parametrize("to", ["coco", "csv"])
def test_output_that_is_an_existing_folder_names_the_users_path(tmp_path, to):
    images, labelme = _globox_style(tmp_path)
    dst = tmp_path / "out.json"
    dst.mkdir()
    result = _run("data", "convert", "--from", "labelme", "--to", to, "--images", images, labelme, dst)
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith(f"error: {dst}: ") and ".tmp" not in line and "\n" not in line
    assert os.listdir(dst) == [] and sorted(os.listdir(tmp_path)) == ["IMAGES", "LABELME", "out.json"]


def test_yolo_round_trip_through_the_dataset_folder(tmp_path):
    images, labelme = _globox_style(tmp_path)
    yolo = tmp_path / "yolo"
    first = _run("data", "convert", "--from", "labelme", "--to", "yolo", "--images", images, labelme, yolo)
    assert first.exit_code == 0, first.output
    # The writer's data.yaml names one split (train): no --split needed.
    assert [key for key in ("train", "val", "test") if key in yaml.safe_load((yolo / "data.yaml").read_text())] == ["train"]
    back = tmp_path / "back.json"
    second = _run("data", "convert", "--from", "yolo", yolo, back)
    assert second.exit_code == 0, second.output
    coco = COCO(str(back))
    boxes = sorted(tuple(round(v, 3) for v in a["bbox"]) for a in coco.loadAnns(coco.getAnnIds()))
    # (4, 6, 30, 40) on 64x48 and (1, 2, 20, 30) on 40x50 survive normalisation and back.
    assert boxes == [(1.0, 2.0, 19.0, 28.0), (4.0, 6.0, 26.0, 34.0)]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["person"]


def test_yolo_folder_with_two_splits_asks_for_one(tmp_path):
    images, labelme = _globox_style(tmp_path)
    yolo = tmp_path / "yolo"
    assert _run("data", "convert", "--from", "labelme", "--to", "yolo", "--images", images, labelme, yolo).exit_code == 0
    data = yaml.safe_load((yolo / "data.yaml").read_text())
    data["val"] = data["train"]
    (yolo / "data.yaml").write_text(yaml.safe_dump(data))
    result = _run("data", "convert", "--from", "yolo", yolo, tmp_path / "back.json")
    assert result.exit_code == 2 and "no split given; choose one of ['train', 'val']" in result.output
    assert _run("data", "convert", "--from", "yolo", "--split", "val", yolo, tmp_path / "back.json").exit_code == 0


def test_proposal_and_video_outputs_that_are_folders_are_refused_before_any_work(tmp_path):
    from detect.inference.video import VideoWriter
    from detect.proposals.cache import compute_proposals

    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        compute_proposals(None, folder)  # refused before the dataset is touched
    assert raised.value.filename == str(folder)
    with pytest.raises(IsADirectoryError) as raised:
        VideoWriter(folder, 25, 64, 48)
    assert raised.value.filename == str(folder) and os.listdir(folder) == []
