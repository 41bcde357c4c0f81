"""Runtime settings from the environment or a `.env` file (prefix `BKIT_`).

No settings at all gives the embedded default: SQLite and a `filesystem://` broker under the
user's data directory. Scale-out: `BKIT_DATABASE_URL=postgresql+psycopg://…` and
`BKIT_BROKER_URL=redis://…`. Secrets (exchange API keys) are read by the exchange layer from
the environment only and never appear here.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BKIT_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=lambda: Path(user_data_dir("bkit")))
    database_url: str | None = None
    broker_url: str | None = None
    #: Beat period of the tick fan-out, in (market) seconds.
    tick_seconds: float = 61.0
    #: Comma-separated modules holding the user's add_exchange/add_strategy calls.
    strategies: str = ""
    #: Keys per tick task of the fan-out: one claim and one write-back transaction per batch.
    #: Smaller batches spread a period's work over more workers; 1 = one task per key.
    tick_batch_size: int = Field(default=100, ge=1, le=1000)
    #: Wall seconds a batch may spend on prices and strategies before it hands the keys it
    #: has not reached to a new batch (capped at a quarter of the tick period).
    tick_batch_budget_seconds: float = Field(default=2.0, gt=0)
    #: Soft/hard time limits of a tick task and the per-key lease, in wall seconds.
    tick_soft_limit: float = 40.0
    tick_hard_limit: float = 50.0
    lease_seconds: float = 55.0
    #: `bkit worker` watchdog: ping period, unanswered pings before a kill, start-up grace
    #: (wall seconds).
    watchdog_seconds: float = Field(default=30.0, gt=0)
    watchdog_misses: int = Field(default=3, ge=1)
    watchdog_grace_seconds: float = Field(default=60.0, ge=0)
    #: Order broker: "none" (signals only), "paper" or "ccxt".
    order_broker: str = "none"
    #: The paper broker's starting quote balance for sizing (SPEC §11; None: unlimited).
    paper_balance: float | None = None
    #: Orders: send-lease of one submit attempt, backoff ceiling and the minimum wait after a
    #: rate limit (wall seconds); the outbox relay's period.
    order_send_lease_seconds: float = 45.0
    order_backoff_max_seconds: float = 60.0
    order_rate_limit_backoff_seconds: float = 30.0
    #: A resting (limit) entry not filled after this long is cancelled and rolled back.
    order_entry_timeout_seconds: float = 7200.0
    relay_seconds: float = 20.0
    #: Days of compact per-tick history kept (SPEC §13; 0 = none written). Trades and
    #: transitions are kept for ever whatever this says.
    tick_history_days: float = Field(default=7.0, ge=0)
    #: Wall seconds between two runs of the history pruning task (small batches each run).
    prune_seconds: float = Field(default=60.0, gt=0)
    #: Reconciliation of balances and open orders with bkit's positions (wall seconds).
    reconcile_seconds: float = Field(default=300.0, gt=0)
    #: Notifications: apprise URLs (comma/space/newline separated) and the error-summary
    #: window (minutes). Never logged: the URLs carry tokens.
    notify_urls: str = Field(default="", repr=False)
    notify_error_minutes: float = Field(default=10.0, gt=0)
    #: Replay clock (demo, tests, soak): market now = start + (real now − epoch) × speed.
    replay_start: datetime | None = None
    replay_speed: float = 60.0
    replay_epoch: datetime | None = None
    #: Stepped replay (`bkit demo`): market now is read from this file, which the driver
    #: moves a minute at a time once every key ticked (no epoch; speed paces the beat).
    replay_clock_file: Path | None = None
    #: Paper exchange candles: a CSV path (default: the sample shipped in bkit/data).
    paper_candles: str | None = None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'bkit.sqlite'}"

    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def strategy_modules(self) -> list[str]:
        return [m.strip() for m in self.strategies.split(",") if m.strip()]

    @property
    def embedded(self) -> bool:
        return self.resolved_broker_url().startswith("filesystem")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings so the next `get_settings()` re-reads the environment."""
    get_settings.cache_clear()
