"""The `detect` command line: help, version, one-line user errors, data commands end to end."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from detect import __version__
from detect.cli import main

COMMANDS = ["data", "proposals", "train", "evaluate", "predict", "benchmark", "export", "weights"]
DETECT = os.path.join(os.path.dirname(sys.executable), "detect")
# Markers of TensorFlow's C++ start-up logging (absl prefixes, oneDNN and CUDA probing).
TF_NOISE = ("I0000", "W0000", "E0000", "absl::InitializeLog", "oneDNN", "cuInit", "cuda")


def run(*args):
    return CliRunner().invoke(main, list(args))


def assert_user_error(result, *fragments):
    """Exit code 2, no traceback, stderr is exactly one line `error: ...` with the fragments."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def command_rows(help_text):
    """The lines of the Commands: section of a --help text (it ends at the first blank line)."""
    return help_text.split("Commands:\n")[1].split("\n\n")[0].splitlines()


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in command_rows(result.output)]
    assert sorted(listed) == sorted(COMMANDS)


@pytest.mark.parametrize(
    "command",
    [[c] for c in COMMANDS] + [["data", "shapes"], ["data", "inspect"], ["data", "convert"], ["proposals", "recall"],
                               ["weights", "convert"]],
    ids=" ".join,
)
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert "Traceback" not in result.output


def test_short_help_option():
    assert run("train", "-h").output == run("train", "--help").output


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"detect, version {__version__}"


def test_bare_detect_lists_every_command_on_one_line_each():
    result = run()
    assert result.exit_code == 0, result.output
    assert result.output == run("--help").output
    rows = [line.split(None, 1) for line in command_rows(result.output)]
    # Listed in the order of a run, each with its whole one-line description (not cut with "...").
    assert [name for name, _ in rows] == COMMANDS
    for name, description in rows:
        assert description and not description.endswith("..."), (name, description)
    assert all(len(line) <= 80 for line in result.output.splitlines()), result.output


def test_console_script_version_and_bare_command(tmp_path):
    version = detect_process("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"detect, version {__version__}")
    bare = detect_process(cwd=tmp_path)
    assert bare.returncode == 0 and "Commands:" in bare.stdout and not bare.stderr


def test_train_missing_config(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_user_error(run("train", str(missing)), f"config file not found: {missing}")


def test_train_unknown_config_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("detector: faster_rcnn\n")
    line = assert_user_error(run("train", str(config), "--set", "training.epoch=3"))
    assert line == "error: unknown config key `training.epoch` (did you mean `training.epochs`?)"


def test_train_invalid_yaml_in_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training: {epochs: 3\n")
    assert_user_error(run("train", str(config)), str(config), "invalid YAML")


def test_evaluate_needs_a_model_or_files():
    assert_user_error(run("evaluate"), "give MODEL_DIR, or --detections FILE --annotations FILE")


def test_evaluate_detections_without_annotations(tmp_path):
    result = run("evaluate", "--detections", str(tmp_path / "d.json"))
    assert_user_error(result, "use either MODEL_DIR or both --detections FILE and --annotations FILE")


def test_proposals_need_config_and_out():
    assert_user_error(run("proposals"), "--config CONFIG and --out FILE")


def test_data_inspect_missing_annotations(tmp_path):
    missing = tmp_path / "missing.json"
    result = run("data", "inspect", "--format", "coco", "--annotations", str(missing))
    assert_user_error(result, "not found", str(missing))


def test_data_convert_missing_voc_root(tmp_path):
    missing = tmp_path / "VOC2007"
    result = run("data", "convert", "--from", "voc", str(missing), str(tmp_path / "out.json"))
    assert_user_error(result, "VOC root folder not found", str(missing))
    assert not (tmp_path / "out.json").exists()


def test_bad_option_value_is_a_usage_error_without_traceback():
    result = run("data", "inspect", "--format", "kitti", "--annotations", "x")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.output and "Traceback" not in result.output


def test_shapes_then_inspect_with_plot(tmp_path):
    out = tmp_path / "shapes"
    result = run("data", "shapes", "--out", str(out), "--num-images", "6", "--image-size", "64")
    assert result.exit_code == 0, result.output
    assert "(5 train / 1 val images)" in result.stdout
    train_json = out / "annotations" / "train.json"
    coco = json.loads(train_json.read_text())
    assert len(coco["images"]) == 5

    grid = tmp_path / "grid.png"
    result = run(
        "data", "inspect", "--format", "coco", "--annotations", str(train_json),
        "--images", str(out / "images"), "--plot", str(grid),
    )
    assert result.exit_code == 0, result.output
    assert "images: 5 (0 without boxes)" in result.stdout
    assert f"boxes: {len(coco['annotations'])}" in result.stdout
    assert "classes: 3" in result.stdout
    assert f"labelled image grid saved to {grid}" in result.stdout
    with Image.open(grid) as image:
        assert image.format == "PNG" and min(image.size) > 64

    converted = tmp_path / "copy.json"
    result = run("data", "convert", "--from", "coco", "--images", str(out / "images"), str(train_json), str(converted))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("5 images written to")
    assert len(json.loads(converted.read_text())["annotations"]) == len(coco["annotations"])


def detect_process(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    return subprocess.run([DETECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_console_script_prints_one_line_without_traceback(tmp_path):
    proc = detect_process("train", "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"error: config file not found: {tmp_path / 'missing.yaml'}\n"


def test_console_script_hides_tensorflow_start_up_logs(tmp_path):
    # evaluate MODEL_DIR imports TensorFlow before it finds that the folder is no model.
    proc = detect_process("evaluate", "no_such_model", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_model" in lines[0], proc.stderr
    assert not any(marker in proc.stderr for marker in TF_NOISE), proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_commands_and_help_do_not_load_tensorflow(tmp_path):
    # A fresh interpreter: TensorFlow is imported only by the commands that run models.
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from detect.cli import main\n"
        "runner = CliRunner()\n"
        "for args in (['train', '--help'], ['evaluate', '--help'], ['train', 'missing.yaml'],\n"
        "             ['data', 'shapes', '--out', 'shapes', '--num-images', '2', '--image-size', '32']):\n"
        "    runner.invoke(main, args)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert (tmp_path / "shapes" / "annotations" / "train.json").exists()
