"""Errors that mean "the user gave bad input", as opposed to bugs.

Every command-line entry point catches `UserError` and prints its message as one line with a non-zero
exit code; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input the user can fix: the message says what and where, in one line."""


class ConfigError(UserError):
    """A config value is unknown, out of range or inconsistent with another."""


class DataError(UserError):
    """Data files are missing, malformed or not what the config asks for."""


class CheckpointError(UserError):
    """A checkpoint cannot be used with this config, or a workdir cannot be written."""


class NonFiniteLossError(UserError):
    """A loss became NaN or infinite; training stopped before saving the bad state."""
