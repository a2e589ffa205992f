"""docs/settings.md's settings table is the Settings object's, flag for flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.server.settings import Settings, settings_table
from scripts.update_readme_settings import updated_readme

SETTINGS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_page_tables_are_current() -> None:
    text = SETTINGS_PAGE.read_text(encoding="utf-8")
    assert updated_readme(text) == text, "run: python scripts/update_readme_settings.py"
    for flag, environment, _, _ in settings_table():
        assert f"| `{flag}` | `{environment}` |" in text


def test_environment_variables_and_flags_set_settings() -> None:
    settings = Settings.from_args(["--port", "7000"], environ={"EMBEDREC_PORT": "6000", "EMBEDREC_MAX_K": "5"})
    assert (settings.port, settings.max_k, settings.limits.max_k) == (7000, 5, 5)
    assert Settings.from_args([], environ={"EMBEDREC_ITEMS_DIR": "items/x"}).items_dir == Path("items/x")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--instances", "0"], {}, "--instances must be at least 1, got 0"),
        (["--sessions", "-1"], {}, "--sessions must be at least 0, got -1"),
        (["--search-niceness", "-5"], {}, "--search-niceness must be at least 0, got -5"),
        ([], {"EMBEDREC_GIL_SWITCH_INTERVAL_MS": "0"}, "--gil-switch-interval-ms must be at least 0.01, got 0.0"),
        (["--max-batch-size", "0"], {}, "--max-batch-size must be at least 1, got 0"),
    ],
)
def test_a_setting_out_of_range_is_a_usage_error_naming_the_flag(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        Settings.from_args(argv, environ=environ)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
