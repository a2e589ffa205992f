"""How a settings class declares a knob: its default, help text and limits, in the field itself.

Every frozen settings class (`BatchPolicy`, `Limits`, `server.settings.groups`) declares its fields
with `setting`; `server.settings` builds one `--flag` and one `EMBEDREC_<NAME>` environment
variable per field from them, grouped by class, so a knob is named once from flag to core.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help_text: str, **extra: Any) -> Any:
    """A dataclass field with its flag's help text; `extra` may say `minimum`, `choices` or
    `secret` (never shown as a default)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **extra})


def check_minimums(instance: Any) -> None:
    """ValueError naming the flag of the first field of `instance` below its `minimum`."""
    for field in dataclasses.fields(instance):
        minimum = field.metadata.get("minimum")
        value = getattr(instance, field.name)
        if minimum is not None and value < minimum:
            raise ValueError(f"--{field.name.replace('_', '-')} must be at least {minimum}, got {value}")


def group(cls: type) -> Any:
    """A dataclass field holding a settings group `cls` (its defaults unless given)."""
    return dataclasses.field(default_factory=cls, metadata={"group": cls})
