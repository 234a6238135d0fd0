"""Errors the library raises for bad input.

Everything a caller can cause (a refused or broken file, an impossible argument) derives from `GanError`,
so the command line maps it to exit code 2 with one line, and the service maps it to HTTP 422.
"""


class GanError(Exception):
    """Bad input to the library: the message is meant for the user, one line, no traceback."""


class UnsafePickleError(GanError):
    """A pickle asked for something outside the allowlist; nothing from it was executed."""


class FormatError(GanError):
    """A file is not in a format we read, or is damaged or implausible (size, tensor count, shapes)."""


class ConfigError(GanError):
    """A configuration or argument is invalid (unknown architecture, impossible resolution, ...)."""
