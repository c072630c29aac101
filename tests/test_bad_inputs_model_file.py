"""A damaged model.keras (issue 18, item 4): one `error:` line with the path and why it is
not a readable model file, for predict, evaluate and export; the file is left as it was."""

import io
import shutil
import zipfile

import pytest

from test_bad_inputs import MODEL_CLASSES, assert_one_line_error, cli, save_jpeg


def _zero_bytes(data):
    return b""


def _random_bytes(data):
    return bytes((i * 37 + 11) % 256 for i in range(4096))


def _truncated(data):
    return data[: len(data) // 2]


def _flipped(data):
    # Flip 16 bytes in the middle of model.weights.h5's stored data: the zip structure is
    # intact, only the member's CRC-32 disagrees.
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    return data[:start] + bytes(b ^ 0xFF for b in data[start:start + 16]) + data[start + 16:]


def _no_config(data):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name != "config.json":
                dst.writestr(name, src.read(name))
    return out.getvalue()


CASES = {
    "zero_bytes": (_zero_bytes, "(0 bytes)"),
    "random_bytes": (_random_bytes, "(not a zip archive"),
    "truncated": (_truncated, "(truncated"),
    "flipped": (_flipped, "model.weights.h5 fails its CRC check"),
    "no_config": (_no_config, "(the archive holds no config.json)"),
}


@pytest.fixture(scope="module")
def good_model(make_model_dir):
    return make_model_dir(MODEL_CLASSES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_model_file_is_one_line_naming_it(tmp_path, good_model, case):
    damage, reason = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(good_model, folder)
    model_file = folder / "model.keras"
    model_file.write_bytes(damage(model_file.read_bytes()))
    before = model_file.read_bytes()
    save_jpeg(tmp_path / "img.jpg")
    result = cli("predict", folder, tmp_path / "img.jpg", "--out", tmp_path / "pred")
    line = assert_one_line_error(result, str(model_file), "not a readable model file", reason)
    assert "File not found" not in line
    assert model_file.read_bytes() == before
    assert not (tmp_path / "pred").exists()


def test_export_and_evaluate_use_the_same_check(tmp_path, good_model):
    folder = tmp_path / "model"
    shutil.copytree(good_model, folder)
    (folder / "model.keras").write_bytes(b"")
    result = cli("export", folder, "--format", "saved_model", "--out", tmp_path / "exported")
    assert_one_line_error(result, str(folder / "model.keras"), "(0 bytes)")
    result = cli("evaluate", folder, "--out", tmp_path / "eval")
    assert_one_line_error(result, str(folder / "model.keras"), "(0 bytes)")


def test_intact_model_file_passes_the_check(good_model):
    from detect.models.loading import load_model_file

    model = load_model_file(str(good_model / "model.keras"))
    assert list(model.class_names) == MODEL_CLASSES
