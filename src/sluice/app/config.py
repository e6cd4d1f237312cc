"""TOML configuration files for the command line: option values read from a file, overridden by flags.

A file holds top-level keys and, optionally, a table per command (``[simulate]``, ``[train]``, ``[infer]``), so
one file can drive a whole pipeline. A command reads its own table, whose keys must all be its options, and the
top-level keys: those it lacks are left to the other commands, and a top-level key that no command has is an
error. Keys are option names without the dashes (``batch-size`` or ``batch_size``); positional arguments have
keys too (``simulator``, ``method``, ``model``). Lists become comma-separated values (``levels = [0.68, 0.95]``).
"""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

__all__ = ["COMMAND_TABLES", "read_config", "apply_config", "require"]

COMMAND_TABLES = ("simulate", "train", "infer")


def read_config(path: str, command: str) -> tuple[dict, dict]:
    """The top-level entries of the TOML file ``path`` and the entries of the table of ``command``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such config file: {path}")
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"cannot read config file {path}: {error}") from None
    shared = {key: value for key, value in document.items() if key not in COMMAND_TABLES}
    own = document.get(command, {})
    if not isinstance(own, dict):
        raise ValueError(f"config file {path}: '{command}' must be a table ([{command}])")
    return shared, own


def _options(command: click.Command) -> dict:
    return {p.name: p for p in command.params if p.name not in ("config", "help")}


def _other_commands_options(ctx: click.Context) -> set:
    """The option names of the other configurable commands of the same group."""
    parent = ctx.parent
    names: set = set()
    if parent is None or not isinstance(parent.command, click.Group):
        return names
    for name in COMMAND_TABLES:
        other = parent.command.get_command(parent, name)
        if other is not None and name != ctx.command.name:
            names |= set(_options(other))
    return names


def _as_option_value(value):
    """TOML lists become the comma-separated text the flags take; other values pass as they are."""
    if isinstance(value, list):
        if any(isinstance(item, (list, dict)) for item in value):
            raise ValueError("nested lists and tables are not option values")
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        raise ValueError("a table is not an option value")
    return value


def apply_config(ctx: click.Context, values: dict, path: str | None) -> dict:
    """Fill ``values`` (the command's parsed parameters) from the config file at ``path`` wherever the command
    line did not set them; returns the merged values. Unknown keys and values of the wrong type are errors."""
    if path is None:
        return values
    command = ctx.command.name
    parameters = _options(ctx.command)
    shared, own = read_config(path, command)
    entries = [(key, value, "at the top level") for key, value in shared.items()]
    entries += [(key, value, f"in [{command}]") for key, value in own.items()]
    elsewhere = _other_commands_options(ctx)
    merged = dict(values)
    for key, raw, where in entries:
        name = key.replace("-", "_")
        if name not in parameters:
            if where == "at the top level" and name in elsewhere:
                continue  # a shared key that another command takes
            known = ", ".join(sorted(parameters))
            raise ValueError(f"config file {path}: unknown key '{key}' {where} for sluice {command} "
                             f"(known: {known})")
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            continue  # a flag overrides the file
        try:
            merged[name] = parameters[name].type_cast_value(ctx, _as_option_value(raw))
        except (click.BadParameter, ValueError) as error:
            message = error.format_message() if isinstance(error, click.BadParameter) else str(error)
            raise ValueError(f"config file {path}: key '{key}': {message}") from None
    return merged


def require(values: dict, *names: str) -> None:
    """Raise a one-line error for each required value missing from both the flags and the config file."""
    missing = [name for name in names if values.get(name) in (None, "")]
    if missing:
        shown = ", ".join(name.upper() if name in ("simulator", "method", "model") else "--" + name.replace("_", "-")
                          for name in missing)
        raise ValueError(f"missing {shown}: give {'it' if len(missing) == 1 else 'them'} on the command line or "
                         "in the --config file")
