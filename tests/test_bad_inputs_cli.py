"""Help texts and interruptions (issue 18, item 11): every option says what it does and
its default; Ctrl-C prints "interrupted" on its own line with how to resume."""

import click
import pytest
from click.testing import CliRunner

from detect.cli import main


def _options(command, path=("detect",)):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _options(sub, path + (name,))
    for param in command.params:
        if isinstance(param, click.Option):
            yield " ".join(path), param


OPTIONS = [(path, option) for path, option in _options(main) if option.name not in ("help", "version")]


@pytest.mark.parametrize("path, option", OPTIONS, ids=[f"{p} {o.opts[0]}" for p, o in OPTIONS])
def test_every_option_has_help_with_its_default(path, option):
    assert option.help, f"{path} {option.opts[0]} has no help text"
    if option.is_flag or option.required or option.multiple:
        return
    text = option.help.lower()
    assert option.show_default or "default" in text or "required" in text, (
        f"{path} {option.opts[0]}: the help does not state the default ({option.help!r})"
    )


def test_defaults_appear_in_the_help_output():
    result = CliRunner().invoke(main, ["predict", "--help"])
    assert "--score-threshold" in result.output and "[default: 0.5" in result.output
    result = CliRunner().invoke(main, ["evaluate", "--help"])
    assert "--batch-size" in result.output and "[default: 8" in result.output


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_train_is_its_own_line_with_how_to_resume(tmp_path, monkeypatch):
    import detect.training.train

    from test_bad_inputs import shapes_coco, tiny_config

    config = tiny_config(tmp_path / "config.yaml", shapes_coco(tmp_path / "data", 2))
    monkeypatch.setattr(detect.training.train, "train", _interrupt)
    result = CliRunner().invoke(main, ["train", config, "--out", str(tmp_path / "model")])
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    # The line before may hold a progress bar: the message starts a line of its own.
    assert result.stderr.endswith("\ninterrupted; run the same command again to resume from the last finished epoch\n")


def test_ctrl_c_elsewhere_says_interrupted(tmp_path, monkeypatch):
    import detect.data.shapes

    monkeypatch.setattr(detect.data.shapes, "generate_shapes", _interrupt)
    result = CliRunner().invoke(main, ["data", "shapes", "--out", str(tmp_path / "s")])
    assert result.exit_code == 130
    assert result.stderr == "\ninterrupted\n"


def test_label_calls_names_the_running_stage_and_restores_the_table():
    from detect.progress import label_calls

    class Bar:
        text = None

        def set_description_str(self, text):
            self.text = text

    seen = []
    table = {"fast_rcnn": lambda setup: seen.append((setup, bar.text)) or 7}
    original = table["fast_rcnn"]
    bar = Bar()
    with label_calls(table, bar, "benchmark"):
        assert table["fast_rcnn"]("setup") == 7
    assert seen == [("setup", "benchmark: fast_rcnn")]
    assert table == {"fast_rcnn": original}


def test_elapsed_bar_writes_nothing_when_stderr_is_not_a_terminal(capsys):
    import time

    from detect.progress import elapsed_bar

    with elapsed_bar("exporting saved_model"):
        time.sleep(0.6)  # one refresh tick
    assert capsys.readouterr().err == ""
