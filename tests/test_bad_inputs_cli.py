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
