"""Every option's help reaches the user whole: ``--help`` renders through Rich markup, which
silently eats anything written like a tag (``[ratio.provenance_map]`` printed as nothing)."""

from __future__ import annotations

import re

import pytest
import typer
import typer.rich_utils
from typer.testing import CliRunner

from synthfilter.cli import app

COMMAND = typer.main.get_command(app)
SECTION = re.compile(r"\[([a-z_.]+)\]")


def _flat(text: str) -> str:
    """Help text with Rich's box drawing, wrapping and escapes removed."""
    return re.sub(r"\s+", "", re.sub(r"[│╭╮╰╯─]", "", text.replace("\\[", "[")))


@pytest.mark.parametrize("name", sorted(COMMAND.commands))
def test_config_sections_named_in_help_are_printed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Wide enough that Rich never cuts a long word short with an ellipsis (what it does on a
    # narrow terminal); the width is typer's, fixed when it was imported unless set here.
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 200)
    command = COMMAND.commands[name]
    named = [(p.name, m) for p in command.params for m in SECTION.findall(getattr(p, "help", None) or "")]
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    shown = _flat(result.output)
    missing = [f"--{opt}: [{section}]" for opt, section in named if f"[{section}]" not in shown]
    assert not missing, f"eaten by Rich markup in `synthfilter {name} --help`: {missing}"


def test_the_sections_this_test_guards_exist() -> None:
    # The check above would pass vacuously if no help named a config section.
    named = {m for c in COMMAND.commands.values() for p in c.params
             for m in SECTION.findall(getattr(p, "help", None) or "")}
    assert {"repetition", "ratio.provenance_map", "gate"} <= named


@pytest.mark.parametrize("name", sorted(COMMAND.commands))
def test_plain_flags_are_not_shown_as_taking_a_value(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--strict <bool>` read as "--strict true", which then failed as a path that does not exist.
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 200)
    command = COMMAND.commands[name]
    flags = [p.opts[0] for p in command.params if getattr(p, "is_flag", False) and p.opts[0] != "--help"]
    result = CliRunner().invoke(app, [name, "--help"])
    shown = [line for line in result.output.splitlines() if any(f" {f} " in line for f in flags)]
    assert shown and not [line for line in shown if "<bool>" in line], shown


@pytest.mark.parametrize("resumable, line", [
    (True, "error: interrupted; rerun with --resume to continue"),
    (False, "error: interrupted before it finished; run it again (this command has no --resume)"),
])
def test_ctrl_c_says_resume_only_where_the_command_has_it(resumable: bool, line: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # `gate` (and train, adapt, eval) said "rerun with --resume", a flag they do not take.
    from synthfilter.cli import guarded

    def stopped() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exc:
        guarded(stopped, resumable=resumable)
    assert exc.value.exit_code == 130 and capsys.readouterr().err.strip() == line
