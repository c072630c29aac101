"""CSV files as Excel and pandas write them (issue 18, item 5): a UTF-8 byte-order mark,
CRLF line ends and a header row are accepted; a row that is neither is still refused."""

import pytest

from test_bad_inputs import assert_one_line_error, cli, save_jpeg


def _write(tmp_path, text, encoding="utf-8"):
    save_jpeg(tmp_path / "a b.jpg")
    save_jpeg(tmp_path / "c.jpg", seed=1)
    path = tmp_path / "boxes.csv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize(
    "prefix, newline, header",
    [
        ("\ufeff", "\n", ""),  # Excel "CSV UTF-8": BOM
        ("", "\r\n", ""),  # Windows line ends
        ("", "\n", "path,x1,y1,x2,y2,class_name"),  # pandas to_csv(index=False) header
        ("\ufeff", "\r\n", "image,xmin,ymin,xmax,ymax,label"),  # all three
    ],
)
def test_excel_and_pandas_csv_is_read(tmp_path, prefix, newline, header):
    rows = ([header] if header else []) + ["a b.jpg,1,2,20,30,cat", "a b.jpg,5,5,9,9,dog", "c.jpg,,,,,"]
    path = _write(tmp_path, prefix + newline.join(rows) + newline)
    result = cli("data", "inspect", "--format", "csv", "--annotations", path)
    assert result.exit_code == 0, result.output
    # 2 images (one negative), 2 boxes: cat 1, dog 1
    assert "Traceback" not in result.output
    from detect.data.csv import load_csv

    dataset = load_csv(str(path))
    assert [r.file_name for r in dataset.records] == ["a b.jpg", "c.jpg"]
    assert dataset.classes == ["cat", "dog"]
    assert [len(r.boxes) for r in dataset.records] == [2, 0]


def test_class_mapping_with_bom_and_header(tmp_path):
    path = _write(tmp_path, "a b.jpg,1,2,20,30,cat\n")
    mapping = tmp_path / "classes.csv"
    mapping.write_bytes("\ufeffclass_name,id\r\ndog,1\r\ncat,0\r\n".encode("utf-8"))
    from detect.data.csv import load_csv

    assert load_csv(str(path), classes_path=str(mapping)).classes == ["cat", "dog"]  # ordered by id 0, 1


def test_word_in_a_later_row_is_still_an_error(tmp_path):
    path = _write(tmp_path, "a b.jpg,1,2,20,30,cat\nc.jpg,x1,y1,x2,y2,cat\n")
    result = cli("data", "inspect", "--format", "csv", "--annotations", path)
    assert_one_line_error(result, "boxes.csv:2", "must be numbers")
