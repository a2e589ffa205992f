"""Flags and environment variables generated from the settings classes, one argument group each.

A field `max_batch_size` of a group is `--max-batch-size` and `EMBEDREC_MAX_BATCH_SIZE`; the
group's title is its class's docstring. A flag wins over the environment, the environment over
the field's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedrec.server.settings import Settings

ENV_PREFIX = "EMBEDREC_"


def flag_of(name: str) -> str:
    """The flag of the knob `name`: `--max-batch-size`."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """The environment variable of the knob `name`: `EMBEDREC_MAX_BATCH_SIZE`."""
    return ENV_PREFIX + name.upper()


def groups() -> list[tuple[str, list[dataclasses.Field[Any]]]]:
    """(title, fields) of every settings group, in `Settings`' order."""
    from embedrec.server.settings import Settings

    return [
        ((f.metadata["group"].__doc__ or f.name).strip(), list(dataclasses.fields(f.metadata["group"])))
        for f in dataclasses.fields(Settings)
        if "group" in f.metadata
    ]


def knobs() -> list[dataclasses.Field[Any]]:
    """Every knob's field, in `--help` order."""
    return [field for _, fields in groups() for field in fields]


def parse_args(cls: type[Settings], argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> Settings:
    """See `Settings.from_args`."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="embedrec serve", description="Run the embedrec gRPC server.")
    add_arguments(parser, environ)
    arguments = list(sys.argv[1:] if argv is None else argv)
    namespace = parser.parse_args(arguments)
    given = {
        f.name
        for f in knobs()
        if env_of(f.name) in environ or any(word.split("=")[0] == flag_of(f.name) for word in arguments)
    }
    try:
        return cls.of(**{f.name: getattr(namespace, f.name) for f in knobs()}, explicit=frozenset(given))
    except ValueError as error:  # a value out of range: a usage error naming the flag (exit 2)
        parser.error(str(error))


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Add one argument group per settings class and one flag per field, its default taken
    from `environ` when set there."""
    for title, fields in groups():
        group = parser.add_argument_group(title)
        for field in fields:
            _add_flag(group, field, environ)


def _add_flag(group: Any, field: dataclasses.Field[Any], environ: Mapping[str, str]) -> None:
    env_name = env_of(field.name)
    if "tuple[str" in str(field.type):  # repeatable: every flag given, else the environment's list
        group.add_argument(
            flag_of(field.name),
            dest=field.name,
            action=_AppendOver,
            default=tuple(item for item in environ.get(env_name, "").split(",") if item),
            help=f"{field.metadata['help']} (env {env_name}; default: none)",
        )
        return
    convert = _converter(field.type)
    default = convert(environ[env_name]) if env_name in environ else field.default
    shown_default = "" if field.metadata.get("secret") else field.default
    group.add_argument(
        flag_of(field.name),
        dest=field.name,
        type=convert,
        default=default,
        choices=field.metadata.get("choices"),
        help=f"{field.metadata['help']} (env {env_name}; default: {shown_default})",
    )


class _AppendOver(argparse.Action):
    """Append to a tuple, the first flag replacing the default (the environment's list)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        given = getattr(namespace, self.dest)
        previous = given if getattr(namespace, f"_{self.dest}_given", False) else ()
        setattr(namespace, self.dest, (*previous, values))
        setattr(namespace, f"_{self.dest}_given", True)


def settings_groups() -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """(group title, rows of (flag, environment variable, default, help)) for the docs."""
    return [(title, [_row(field) for field in fields]) for title, fields in groups()]


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, environment variable, default, help) for every setting, all groups together."""
    return [row for _, rows in settings_groups() for row in rows]


def _row(field: dataclasses.Field[Any]) -> tuple[str, str, str, str]:
    default = "(empty)" if field.default in ("", ()) else str(field.default)
    return flag_of(field.name), env_of(field.name), default, field.metadata["help"]


def _converter(annotation: Any) -> Any:
    text = str(annotation)
    if "Path | None" in text:
        return lambda value: Path(value) if value else None
    if "Path" in text:
        return Path
    if text == "bool":
        return _boolean
    if text == "int":
        return int
    if text == "float":
        return float
    return str


def _boolean(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
