"""A plain opencv-python shadowing the contrib build (issue 18, item 10): selective search
says in one line which package to remove, instead of an AttributeError traceback."""

import os
import subprocess
import sys

from test_bad_inputs import ROOT, shapes_coco, tiny_config


def _fake_plain_opencv(site):
    """A `cv2` without ximgproc, owned by an installed 'opencv-python' distribution."""
    (site / "cv2").mkdir(parents=True)
    (site / "cv2" / "__init__.py").write_text(
        "import sys\n__version__ = '4.9.0'\n"
        "def __getattr__(name):\n    raise AttributeError(name)\n"
    )
    info = site / "opencv_python-4.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencv-python\nVersion: 4.9.0\n")
    (info / "top_level.txt").write_text("cv2\n")
    (info / "RECORD").write_text("cv2/__init__.py,,\n")


def test_shadowing_opencv_python_is_named_in_one_line(tmp_path):
    _fake_plain_opencv(tmp_path / "site")
    train = shapes_coco(tmp_path / "data", 2)
    config = tiny_config(tmp_path / "config.yaml", train)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    code = (
        "import sys\n"
        "from detect.cli import main\n"
        "sys.argv = ['detect', 'proposals', '--config', sys.argv[1], '--out', sys.argv[2]]\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, config, str(tmp_path / "proposals.npz")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # The dataset summary (INFO log) comes first; then exactly one error line.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert errors[0].startswith("error: OpenCV at ") and "has no ximgproc" in errors[0]
    assert "pip uninstall -y opencv-python" in errors[0]
    assert not (tmp_path / "proposals.npz").exists()


def test_contrib_build_has_no_problem():
    from detect.proposals.selective_search import OPENCV_PROBLEM

    assert OPENCV_PROBLEM is None
