"""VOC ImageSets ids with spaces (issue 18, item 7): an id is the whole line minus a
trailing " -1/0/1" flag column, so "coffee cup" is read from "coffee cup.xml"."""

from test_bad_inputs import assert_one_line_error, cli, save_jpeg

XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height></size>
<object><name>dog</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
</annotation>"""


def _voc(root, ids, lines):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        save_jpeg(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(XML.format(name=image_id), encoding="utf-8")
    (root / "ImageSets/Main/train.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_ids_with_spaces_and_flag_columns(tmp_path):
    from detect.data.voc import load_voc

    # "coffee cup" plain; "big dog  -1" and "cat 1" carry a flag column; "mug 2" is an id
    # (2 is not a flag).
    _voc(tmp_path, ["coffee cup", "big dog", "cat", "mug 2"], ["coffee cup", "big dog  -1", "cat 1", "mug 2"])
    dataset = load_voc(str(tmp_path), "train")
    assert [r.file_name for r in dataset.records] == ["coffee cup.jpg", "big dog.jpg", "cat.jpg", "mug 2.jpg"]
    result = cli("data", "inspect", "--format", "voc", "--annotations", tmp_path, "--split", "train")
    assert result.exit_code == 0, result.output


def test_a_whole_line_that_names_an_xml_wins_over_the_flag_reading(tmp_path):
    from detect.data.voc import load_voc

    _voc(tmp_path, ["shot 1"], ["shot 1"])  # the file is "shot 1.xml", not "shot.xml" flagged 1
    assert [r.file_name for r in load_voc(str(tmp_path), "train").records] == ["shot 1.jpg"]


def test_missing_id_with_a_space_is_named_whole(tmp_path):
    _voc(tmp_path, [], ["coffee cup"])
    result = cli("data", "inspect", "--format", "voc", "--annotations", tmp_path, "--split", "train")
    assert_one_line_error(result, "coffee cup.xml", "train.txt")


def test_split_file_not_in_utf8_is_one_line_naming_it(tmp_path):
    # "caf\xe9" in Latin-1 (a Windows-written ImageSets file): byte 3 is not UTF-8.
    _voc(tmp_path, ["cafe"], ["cafe"])
    (tmp_path / "ImageSets/Main/train.txt").write_bytes(b"caf\xe9\n")
    result = cli("data", "inspect", "--format", "voc", "--annotations", tmp_path, "--split", "train")
    assert_one_line_error(result, "train.txt", "not a UTF-8 text file (byte 3")


def test_split_file_with_a_byte_order_mark_and_crlf(tmp_path):
    from detect.data.voc import load_voc

    _voc(tmp_path, ["a", "b"], [])
    (tmp_path / "ImageSets/Main/train.txt").write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    assert [r.file_name for r in load_voc(str(tmp_path), "train").records] == ["a.jpg", "b.jpg"]
