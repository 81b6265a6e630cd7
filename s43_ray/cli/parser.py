"""argparse with the project's rules: a usage error is one line naming the value and what was
expected, and exits 2 (:class:`UsageError`); integers are range-checked by :func:`int_in`."""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from ..errors import InputError

_INVALID_CHOICE = re.compile(r"argument ([^:]+): invalid choice: (.+) \(choose from (.+)\)")


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        choice = _INVALID_CHOICE.fullmatch(message)
        if choice:  # argparse's wording, made to name the value and what was expected
            flag, value, allowed = choice.groups()
            message = f"{flag} {value} is not valid; expected one of {allowed}"
        raise UsageError(message)


class UsageError(InputError):
    """A command line argparse refused."""


def int_in(name: str, lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not an integer; "
                                             f"expected {lo}..{hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} {value} is out of range; expected {lo}..{hi}")
        return value
    return parse

