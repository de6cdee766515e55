"""Errors that reach the user as one line, without a traceback."""


class SpineSegDiffError(Exception):
    """A problem the user can fix: the message names the file and what to do.

    The CLI prints ``error: <message>`` and exits with ``exit_code``.
    """

    exit_code = 2


class InputError(SpineSegDiffError):
    """An input file (image, mask, folder) is missing, unreadable or unsuitable."""


class ModelError(SpineSegDiffError):
    """A model file is missing, corrupt, of another version, or does not fit."""


class OutputError(SpineSegDiffError, OSError):
    """An output could not be written completely (disk full, read-only, permissions).

    Also an OSError, so code that tolerates a failed optional write (the sample cache)
    keeps doing so."""

    def __str__(self) -> str:  # OSError's own str() would show its (errno, strerror) form
        return str(self.args[0]) if self.args else ""
