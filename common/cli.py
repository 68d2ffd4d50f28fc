"""What every console entry point's ``--help`` shares: each option's default, shown once.

argparse's ``ArgumentDefaultsHelpFormatter`` appends "(default: ...)" to every option, also
"(default: None)" to an option whose default is "not given" and to flags, and a second default
to help that already names one. This formatter appends it only when it tells the reader
something: a real value, not yet mentioned in the help text.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or not _worth_showing(action):
            return text
        return f"{text} (default: %(default)s)"


def _worth_showing(action: argparse.Action) -> bool:
    """A default that is a value: not "not given" (None, ""), not a flag's off state, not an
    empty list an ``append`` option starts from, not a positional's."""
    default = action.default
    if default is None or default is False or default in (argparse.SUPPRESS, "", []):
        return False
    return action.nargs != 0 and bool(action.option_strings)
