"""The one family of errors a user can fix (bad config, data, paths, checkpoints), and how a command reports them.

Each is printed as one line, `augrun: error: <key>: <what is wrong>; valid: <what would be>`, with exit status 2 and no
traceback. The subclasses say where the problem lies; `key` names the config key, path or option when there is one.
"""
from __future__ import annotations

import sys
from typing import NoReturn

INPUT_ERROR_STATUS = 2


class UserError(ValueError):
    """Anything the user can fix: one line on stderr, exit status 2. `key` names the config key, path, option or
    override it is about ("" when there is none); `message` says what is wrong and what would be valid."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key, self.message = key, message

    def __reduce__(self):
        # picklable as its own type: a rank's error crosses the process boundary as this, not as traceback text
        return type(self), (self.key, self.message)


class ConfigError(UserError):
    """A config value that cannot be used."""


class DataError(UserError):
    """A dataset that cannot be read."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used."""


class RunDirError(UserError):
    """A directory that cannot hold this run."""


class CompareError(UserError):
    """Bad input to the comparison (no runs where runs were expected, an --out that cannot be written)."""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def printable(text: object) -> str:
    """``text`` (usually a path) with control characters written as Python escapes (a newline as \\n, an escape as
    \\x1b), so that a file name cannot split a one-line message or drive the terminal; everything else unchanged."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def fail(message: str, status: int = INPUT_ERROR_STATUS) -> NoReturn:
    # a message must stay one line even when it quotes a path or value that holds a line break
    print(f"augrun: error: {' '.join(message.splitlines())}", file=sys.stderr)
    sys.exit(status)
