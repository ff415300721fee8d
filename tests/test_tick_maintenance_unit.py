"""The tick maintainer reads its settings as .env documents them (retention 0 = for ever), and refuses bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.tick_maintenance import TickMaintainer
from core.settings import Settings, SettingsError, load_env


def settings_with(tmp_path: Path, **overrides: str) -> Settings:
    env = {**load_env(), "TICK_MAINTAINER_DB_PASSWORD": "unit-test", **overrides}
    return Settings(env=env, state_dir=tmp_path, cache_dir=tmp_path)


def test_the_env_files_retention_reaches_the_maintenance_step(tmp_path: Path) -> None:
    maintainer = TickMaintainer.from_settings(settings_with(tmp_path, RAW_TICKS_RETENTION_DAYS="30",
                                                            RAW_TICKS_PREMAKE_DAYS="3"))
    assert (maintainer.keep_days, maintainer.premake_days) == (30, 3)


def test_a_retention_of_zero_keeps_raw_ticks_for_ever(tmp_path: Path) -> None:
    assert TickMaintainer.from_settings(settings_with(tmp_path, RAW_TICKS_RETENTION_DAYS="0")).keep_days is None


@pytest.mark.parametrize("key,value", [("RAW_TICKS_RETENTION_DAYS", "-1"), ("RAW_TICKS_RETENTION_DAYS", "30d"),
                                       ("RAW_TICKS_PREMAKE_DAYS", "1.5"), ("TICK_MAINTENANCE_INTERVAL", "0")])
def test_a_bad_setting_is_refused_with_its_name(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        TickMaintainer.from_settings(settings_with(tmp_path, **{key: value}))
