"""The one exception type for problems the user can fix (bad input, bad options, missing tools)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or options; the message alone tells the user what is wrong and what to do."""
