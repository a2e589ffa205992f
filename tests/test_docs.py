"""The README's settings table is the Settings object's, flag for flag."""

from __future__ import annotations

from pathlib import Path

from server.settings import Settings, settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_setting_with_its_default_and_environment_variable() -> None:
    text = README.read_text(encoding="utf-8")
    for flag, environment, default, help_text in settings_table():
        assert f"| `{flag}` | `{environment}` | {default} | {help_text} |" in text, flag


def test_environment_variables_and_flags_set_settings() -> None:
    settings = Settings.from_args(["--port", "7000"], environ={"EMBEDREC_PORT": "6000", "EMBEDREC_MAX_K": "5"})
    assert (settings.port, settings.max_k, settings.limits.max_k) == (7000, 5, 5)
    assert Settings.from_args([], environ={"EMBEDREC_ITEMS_DIR": "items/x"}).items_dir == Path("items/x")
