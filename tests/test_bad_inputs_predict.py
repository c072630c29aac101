"""`detect predict` with inputs it cannot read (issue 18, item 9): no FFmpeg/OpenCV log
lines, the summary says how many inputs were skipped and why, and a failed predict leaves
no empty --out folder."""

import os
import subprocess
import sys

from test_bad_inputs import MODEL_CLASSES, ROOT, assert_one_line_error, cli, save_jpeg


def test_zero_byte_video_is_one_line_without_native_log(tmp_path, make_model_dir):
    model = make_model_dir(MODEL_CLASSES)
    (tmp_path / "empty.mp4").write_bytes(b"")
    out = tmp_path / "pred"
    # A subprocess: FFmpeg writes to file descriptor 2 itself, which CliRunner cannot see.
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "detect.cli", "predict", str(model), str(tmp_path / "empty.mp4"), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: cannot open video (corrupt or unsupported format): {tmp_path / 'empty.mp4'}"], lines
    assert not out.exists()


def test_summary_counts_skipped_inputs_and_why(tmp_path, make_model_dir):
    model = make_model_dir(MODEL_CLASSES)
    folder = tmp_path / "in"
    folder.mkdir()
    save_jpeg(folder / "good.jpg")
    (folder / "bad.jpg").write_bytes(b"not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    result = cli("predict", model, folder, "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == (
        f"1 frames processed, 2 skipped (2 unreadable images); annotated outputs and detections written to "
        f"{tmp_path / 'pred'}"
    )


def test_nothing_readable_is_an_error_and_leaves_no_out_folder(tmp_path, make_model_dir):
    model = make_model_dir(MODEL_CLASSES)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    result = cli("predict", model, tmp_path / "bad.jpg", "--out", tmp_path / "pred")
    assert_one_line_error(result, "no frame could be read", "bad.jpg", "1 unreadable image")
    assert not (tmp_path / "pred").exists()


def test_an_existing_out_folder_is_kept(tmp_path, make_model_dir):
    model = make_model_dir(MODEL_CLASSES)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "pred").mkdir()
    result = cli("predict", model, tmp_path / "bad.jpg", "--out", tmp_path / "pred")
    assert result.exit_code == 2
    assert (tmp_path / "pred").is_dir()  # the user's folder, not ours to remove
