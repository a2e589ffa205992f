"""The generated settings reference (docs/settings.md) is the Settings object's, group by group."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.server.settings import Settings, settings_groups, settings_table
from scripts.update_readme_settings import targets, updated_readme


def test_the_generated_tables_are_current() -> None:
    texts = {path: path.read_text(encoding="utf-8") for path in targets()}
    for path, text in texts.items():
        assert updated_readme(text) == text, f"{path}: run python scripts/update_readme_settings.py"
    (text,) = [text for text in texts.values() if "<!-- settings:begin -->" in text]
    for flag, environment, _, _ in settings_table():
        assert f"| `{flag}` | `{environment}` |" in text
    for title, _ in settings_groups():
        assert f"**{title}**" in text


def test_flags_come_in_groups_titled_by_their_class(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        Settings.from_args(["--help"], environ={})
    printed = capsys.readouterr().out
    for title, rows in settings_groups():
        assert f"{title}:\n  {rows[0][0]} " in printed


def test_environment_variables_and_flags_set_settings() -> None:
    settings = Settings.from_args(["--port", "7000"], environ={"EMBEDREC_PORT": "6000", "EMBEDREC_MAX_K": "5"})
    assert (settings.server.port, settings.limits.max_k) == (7000, 5)
    assert Settings.from_args([], environ={"EMBEDREC_ITEMS_DIR": "items/x"}).search.items_dir == Path("items/x")


def test_one_name_per_knob_from_flag_to_the_batcher() -> None:
    settings = Settings.from_args(
        ["--max-batch-tokens", "512", "--length-grouping", "false"], environ={"EMBEDREC_MAX_QUEUED_TEXTS": "9"}
    )
    policy = settings.batching
    assert (policy.max_batch_tokens, policy.length_grouping, policy.max_queued_texts) == (512, False, 9)
    assert settings.explicitly_set() == {"max_batch_tokens", "length_grouping", "max_queued_texts"}
    assert Settings.of(max_k=3, port=0).replace(max_k=4).values()["max_k"] == 4
    with pytest.raises(TypeError, match="--max-batch-cost"):
        Settings.of(max_batch_cost=1)


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
