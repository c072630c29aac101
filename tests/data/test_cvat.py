"""CVAT for images 1.1 reader on a hand-written export and its errors."""

import os

import numpy as np
import pytest

from detect.data.cvat import load_cvat
from detect.data.formats import load_dataset
from detect.errors import DetectError

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "cvat")
XML = os.path.join(ROOT, "annotations.xml")


def test_cvat_images_export():
    dataset = load_dataset("cvat", XML)
    # <meta> labels are the class list: bicycle, which no box uses, is kept.
    assert dataset.classes == ["traffic light", "café", "bicycle"]
    a, e, negative = dataset.records
    # The names are found under <xml dir>/images.
    assert a.path == os.path.join(ROOT, "images", "a.png") and a.image_id == 1
    # boxes as given; the polygon (1, 2), (20, 4), (12, 30) -> (1, 2, 20, 30); points skipped.
    np.testing.assert_array_equal(a.boxes, [[10.5, 5, 40, 30.25], [0, 0, 16, 24], [1, 2, 20, 30]])
    np.testing.assert_array_equal(a.labels, [1, 2, 2])
    assert e.file_name == "sub dir/é.jpg" and (e.width, e.height) == (80, 60)
    # 40x10 box centred at (40, 30) rotated by 90 degrees -> 10x40 -> (35, 10, 45, 50).
    np.testing.assert_allclose(e.boxes, [[35, 10, 45, 50]], atol=1e-4)
    assert len(negative.boxes) == 0 and negative.image_id == 3
    assert dataset.notes == {
        "polygons reduced to their bounding box": 1,
        "rotated boxes replaced by their axis-aligned bounding box": 1,
        "occluded boxes (kept)": 1,
        "shapes skipped (polyline, points, ellipse, mask, skeleton)": 1,
    }


def _xml(tmp_path, body, labels="<meta><task><labels><label><name>a</name></label></labels></task></meta>"):
    path = tmp_path / "annotations.xml"
    path.write_text(f"<annotations><version>1.1</version>{labels}{body}</annotations>")
    return str(path)


def test_classes_from_boxes_without_meta(tmp_path):
    body = ('<image id="0" name="x.png" width="10" height="10">'
            '<box label="zebra" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5"/>'
            '<box label="ant" occluded="0" xtl="2" ytl="2" xbr="6" ybr="6"/></image>')
    dataset = load_cvat(_xml(tmp_path, body, labels=""))
    assert dataset.classes == ["ant", "zebra"]
    np.testing.assert_array_equal(dataset.records[0].labels, [2, 1])


@pytest.mark.parametrize("body, message", [
    ('<image id="0" name="x.png" width="10" height="10"><box label="b" xtl="1" ytl="1" xbr="5" ybr="5"/></image>',
     "image 'x.png': label 'b' is not in the classes"),
    ('<image id="0" name="x.png" width="10" height="10"><box label="a" xtl="1" ytl="1" xbr="5"/></image>',
     "image 'x.png' shape 0: <box> needs numeric"),
    ('<image id="0" name="x.png" width="ten" height="10"></image>', "id, width and height must be integers"),
    ('<image id="0" name="x.png" width="10" height="10"><polygon label="a" points="1,2;3"/></image>',
     "polygon points must be"),
])
def test_bad_files_name_the_image(tmp_path, body, message):
    with pytest.raises(DetectError, match=message):
        load_cvat(_xml(tmp_path, body))


def test_not_cvat(tmp_path):
    (tmp_path / "x.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    with pytest.raises(DetectError, match="not a CVAT for images file"):
        load_cvat(str(tmp_path / "x.xml"))
    (tmp_path / "v.xml").write_text("<annotations><track id='0' label='a'/></annotations>")
    with pytest.raises(DetectError, match="CVAT for video"):
        load_cvat(str(tmp_path / "v.xml"))
