"""Argument types shared by the command-line tools."""

from __future__ import annotations

import argparse
import math
from typing import Iterable, Optional, Sequence, Set


def parse_number(text: str, kind: type = float, minimum: Optional[float] = None, *, above: bool = False,
                 below: Optional[float] = None):
    """``text`` as a finite ``kind`` (int or float) >= ``minimum`` (> when ``above``) and <
    ``below``; ValueError saying what was expected ("must be a finite number, got nan")
    otherwise.  nan and inf are refused: they would reach config.json, which is JSON and has neither."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if kind is float and value is not None and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {text}")
    if value is None:
        raise ValueError(f"must be {'an integer' if kind is int else 'a finite number'}, "
                         f"got {text if text.strip() else repr(text)}")
    if minimum is not None and (value <= minimum if above else value < minimum):
        raise ValueError(f"must be {'>' if above else '>='} {minimum:g}, got {text}")
    if below is not None and value >= below:
        raise ValueError(f"must be below {below:g}, got {text}")
    return value


def finite_float(text: str) -> float:
    """An argparse ``type``: any finite number (argparse names the flag in its error)."""
    try:
        return parse_number(text, float)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def given_on_command_line(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Set[str]:
    """The destinations of the options written in ``argv`` (whatever their value), so that a
    flag given equal to its default is still seen as given."""
    actions: Iterable[argparse.Action] = parser._actions  # argparse has no public list of them
    defaults = {action: action.default for action in actions}
    try:
        for action in defaults:
            action.default = argparse.SUPPRESS
        given = parser.parse_args(argv)
    finally:
        for action, default in defaults.items():
            action.default = default
    return set(vars(given))
