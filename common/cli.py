"""What every console entry point shares: its parser, each option's default shown once in
``--help``, a config built from options named like the config's fields, and a service's start
(logging set up, settings refused with their reasons).

argparse's ``ArgumentDefaultsHelpFormatter`` appends "(default: ...)" to every option, also
"(default: None)" to an option whose default is "not given" and to flags, and a second default
to help that already names one. This formatter appends it only when it tells the reader
something: a real value, not yet mentioned in the help text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from common.logs import configure_logging

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")
SettingsT = TypeVar("SettingsT")


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


def command_parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """A console command's parser: its module docstring's first paragraph as the description,
    defaults shown as ``HelpFormatter`` decides."""
    return argparse.ArgumentParser(
        prog=prog,
        description=(doc or "").split("\n\n")[0],
        formatter_class=HelpFormatter,
    )


def config_from_args(
    config_type: type[ConfigT], args: argparse.Namespace, **overrides: Any
) -> ConfigT:
    """A dataclass config whose options are named like its fields: every field an option sets
    comes from ``args`` (fields without an option keep their defaults), ``overrides`` win."""
    options = vars(args)
    values = {f.name: options[f.name] for f in fields(config_type) if f.name in options}
    return config_type(**(values | overrides))


def service_start(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    settings_from: Callable[[argparse.Namespace], SettingsT],
    prefix: str = "",
) -> tuple[argparse.Namespace, SettingsT | None]:
    """A service command's options, logging configured at ``--log-level``, and its settings;
    None (reasons printed to stderr, for exit status 2) where the settings are invalid."""
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return args, settings_from(args)
    except ValidationError as exc:
        print(f"{prefix}invalid settings:\n{exc}", file=sys.stderr)
        return args, None
