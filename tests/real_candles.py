"""The real candles every test reads: the one copy shipped with bkit in `bkit/data/` (its
README says where they come from, their span and gaps). Tests never keep copies of their own.
"""

from __future__ import annotations

from pathlib import Path

from bkit.core.candles import Candle
from bkit.exchange.paper import sample_csv_path
from bkit.testing import read_candles_csv

#: `bkit/data/`, as the installed package sees it.
REAL_CANDLES_DIR: Path = sample_csv_path().parent
XRP_ETH_CSV = "XRP_ETH-1m.csv"
UNITTEST_BTC_CSV = "UNITTEST_BTC-1m.csv"


def real_candles_path(name: str) -> Path:
    """Path of one shipped candle file (`XRP_ETH_CSV`, `UNITTEST_BTC_CSV`)."""
    path = REAL_CANDLES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no shipped candle file {name!r} in {REAL_CANDLES_DIR}")
    return path


def real_candles(name: str) -> list[Candle]:
    """The candles of one shipped file, every row checked."""
    return read_candles_csv(real_candles_path(name))
