"""Numeric flags are refused when out of range, naming the flag (issue 13: --beams 0/-3 silently became k,
--batch-size 0 raised `range() arg 3 must not be zero`, --limit -1 dropped the last conversation), and --help of
every verb shows the defaults."""

from __future__ import annotations

import argparse

import pytest

from dlsearch.cli import build_parser

GEN = ["generate", "--model", "m", "--index", "i", "--input", "c.jsonl", "--out", "p.jsonl"]


@pytest.mark.parametrize("argv, flag", [
    (GEN + ["--beams", "0"], "--beams"),
    (GEN + ["--beams", "-3"], "--beams"),
    (GEN + ["--batch-size", "0"], "--batch-size"),
    (GEN + ["--limit", "-1"], "--limit"),
    (GEN + ["--k", "0"], "--k"),
    (["recommend", "--config", "c.yaml", "--input", "c.jsonl", "--out", "p.jsonl", "--k", "-2"], "--k"),
    (["quickstart", "--eval-turns", "-5"], "--eval-turns"),
    (["model", "memorization", "runs/m", "--batch-size", "0"], "--batch-size"),
])
def test_out_of_range_numbers_are_refused_naming_the_flag(argv, flag, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "must be" in err, err


def test_valid_numbers_pass() -> None:
    args = build_parser().parse_args(GEN + ["--beams", "4", "--batch-size", "2", "--limit", "3"])
    assert (args.beams, args.batch_size, args.limit) == (4, 2, 3)


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_help_shows_defaults_on_every_verb() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 10
    assert all(p.formatter_class is argparse.ArgumentDefaultsHelpFormatter for p in parsers)
    gen = next(p for p in parsers if p.prog.endswith(" generate"))
    assert "(default: 20)" in gen.format_help()  # --beams


@pytest.mark.parametrize("verb", ["generate", "recommend"])
def test_out_directory_is_refused_before_any_work(verb, tmp_path, capsys) -> None:
    """issue 13: `--out <dir>` crashed after all the compute. Refused first: the model/config paths here do not
    even exist, and the error is about --out."""
    from dlsearch.cli import main

    argv = (GEN[:-2] if verb == "generate" else ["recommend", "--config", "missing.yaml", "--input", "c.jsonl"])
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a directory" in capsys.readouterr().err
