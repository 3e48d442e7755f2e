"""Argument types shared by the command-line tools."""

from __future__ import annotations

import argparse
import math
from typing import Iterable, Optional, Sequence, Set


def finite_float(text: str) -> float:
    """A float flag's value: any finite number (nan and inf would reach config.json, which is
    JSON and has neither)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


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
