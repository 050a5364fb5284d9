"""Exceptions that carry a message meant for the user (printed without a traceback by the CLI)."""


class AlflowError(Exception):
    """Base class: an error whose message is complete and user-facing."""


class ConfigError(AlflowError, ValueError):
    """A configuration file or value is invalid; the message names the file and field."""


class InputError(AlflowError, ValueError):
    """An input file or structure is invalid (unreadable, malformed, unphysical)."""
