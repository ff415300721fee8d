"""The chart's settings, read once from core.settings (.env + environment) at the entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from chart.pbids import pbids, powerbi_server
from core.settings import Settings, SettingsError

APPLICATION_NAME = "cryptopipe-chart"
VENDOR_SCRIPT = Path("dist") / "lightweight-charts.standalone.production.js"


@dataclass(frozen=True)
class ChartConfig:
    host: str
    port: int
    dsn: str
    stale_seconds: float
    refresh_seconds: float
    max_candles: int
    max_viewers: int
    max_series: int
    symbols_refresh_seconds: float
    assets_dir: Path
    symbols: tuple[str, ...]
    pbids: str

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None, port: int | None = None) -> ChartConfig:
        dsn = make_conninfo(
            host=settings["CHART_DB_HOST"], port=settings.port("POSTGRES"), dbname=settings["POSTGRES_DB"],
            user=settings["CHART_DB_USER"], password=settings["CHART_DB_PASSWORD"],
            application_name=APPLICATION_NAME, connect_timeout=3,
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )
        return cls(
            host=host or settings["CHART_HOST"],
            port=port or settings.port("CHART"),
            dsn=dsn,
            stale_seconds=_positive(settings, "CHART_STALE_SECONDS"),
            refresh_seconds=_positive(settings, "CHART_REFRESH_SECONDS"),
            max_candles=int(_positive(settings, "CHART_MAX_CANDLES")),
            max_viewers=int(_positive(settings, "CHART_MAX_VIEWERS")),
            max_series=int(_positive(settings, "CHART_MAX_SERIES")),
            symbols_refresh_seconds=_positive(settings, "CHART_SYMBOLS_REFRESH_SECONDS"),
            assets_dir=settings.cache_dir / f"lightweight-charts-{settings['LIGHTWEIGHT_CHARTS_VERSION']}",
            symbols=tuple(s.strip() for s in (settings.get("SYMBOLS") or "").split(",") if s.strip()),
            pbids=pbids(powerbi_server(settings), settings["POSTGRES_DB"]),
        )

    @property
    def vendor_script(self) -> Path:
        """The chart library's standalone build, fetched by scripts/fetch_artifacts.sh chart."""
        path = self.assets_dir / VENDOR_SCRIPT
        if not path.is_file():
            raise SettingsError(f"the chart library is missing ({path}): run scripts/fetch_artifacts.sh chart")
        return path


def _positive(settings: Settings, key: str) -> float:
    value = settings[key]
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise SettingsError(f"setting {key} must be a positive number, not {value!r}")
    return number
