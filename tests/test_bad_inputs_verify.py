"""`detect data inspect --verify` (issue 18, item 8): every image is decoded; truncated or
undecodable files are listed with the reason, and the exit code is 2."""

from test_bad_inputs import assert_one_line_error, cli, shapes_coco, truncate_jpeg


def test_verify_lists_truncated_and_undecodable_files(tmp_path):
    path = shapes_coco(tmp_path, 5)
    truncate_jpeg(tmp_path / "0001.jpg")
    # Header intact, pixel data replaced by garbage: passes loading, fails decoding.
    data = (tmp_path / "0003.jpg").read_bytes()
    (tmp_path / "0003.jpg").write_bytes(data[:600] + bytes(range(256)) * 4)
    # Without --verify both pass (loading reads headers only).
    assert cli("data", "inspect", "--format", "coco", "--annotations", path).exit_code == 0
    result = cli("data", "inspect", "--format", "coco", "--annotations", path, "--verify", "--workers", "2")
    assert_one_line_error(result, "2 of 5 images do not decode")
    report = result.stdout.split("2 of 5 images do not decode:\n")[1]
    listed = report.strip("\n").splitlines()
    assert len(listed) == 2
    assert "0001.jpg" in listed[0] and "truncated" in listed[0]
    assert "0003.jpg" in listed[1]


def test_verify_passes_a_clean_dataset(tmp_path):
    path = shapes_coco(tmp_path, 3)
    result = cli("data", "inspect", "--format", "coco", "--annotations", path, "--verify")
    assert result.exit_code == 0, result.output
    assert "all 3 images decode" in result.stdout
