"""`bkit venue` / `python -m bkit.venue`: serve a paper-trading venue on the shipped candles.

The venue replays `bkit/data/XRP_ETH-1m.csv` (XRP/ETH) and `bkit/data/UNITTEST_BTC-1m.csv`
(UNITTEST/BTC) on a replay clock: market time = start + (real now - launch) x speed. Point any
ccxt binance client at the printed base URL (`bkit.venue.point_ccxt_at`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from bkit.venue.markets import DEFAULT_MARKETS
from bkit.venue.prices import read_candles_csv
from bkit.venue.venue import Venue

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: Shipped candle files and the market each one is (bkit/data/README.md).
SHIPPED_CANDLES: dict[str, str] = {"XRP/ETH": "XRP_ETH-1m.csv",
                                   "UNITTEST/BTC": "UNITTEST_BTC-1m.csv"}
DEFAULT_BALANCES = ("USDT=10000", "ETH=10", "BTC=1")


def replay_clock(start_ms: int, speed: float,
                 now: Callable[[], float] = time.time) -> Callable[[], int]:
    """A clock (ms) that starts at `start_ms` and runs `speed` times faster than real time."""
    launch = now()
    return lambda: start_ms + int((now() - launch) * speed * 1000)


def _balance(text: str) -> tuple[str, Decimal]:
    asset, _, amount = text.partition("=")
    try:
        return asset.strip().upper(), Decimal(amount)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected ASSET=AMOUNT, got {text!r}") from None


def _iso_ms(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date/time, got {text!r}") from None
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bkit venue", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
    parser.add_argument("--balance", action="append", type=_balance, metavar="ASSET=AMOUNT",
                        help=f"initial free balance, repeatable (default {DEFAULT_BALANCES})")
    parser.add_argument("--fee-rule", default="base",
                        help="base (Binance without BNB), quote, or a third asset like BNB")
    parser.add_argument("--fee-rate", default="0.001", help="fraction, default 0.001")
    parser.add_argument("--fee-asset-price", default=None,
                        help="price of the third fee asset in the quote currency")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="replay speed (market seconds per real second), default 60")
    parser.add_argument("--start", type=_iso_ms, default=None,
                        help="market time to start at (ISO, UTC); default: the first candle")
    return parser


def build_venue(args: argparse.Namespace) -> Venue:
    balances = dict(args.balance or [_balance(b) for b in DEFAULT_BALANCES])
    venue = Venue(DEFAULT_MARKETS, balances=balances, fee_rate=args.fee_rate,
                  fee_rule=args.fee_rule, fee_asset_price=args.fee_asset_price,
                  host=args.host, port=args.port)
    for symbol, name in SHIPPED_CANDLES.items():
        venue.load_candles(symbol, read_candles_csv(DATA_DIR / name))
    span = venue.engine.prices.span()
    start = args.start if args.start is not None else (span[0] + 60_000 if span else 0)
    venue.set_clock(replay_clock(start, args.speed))
    return venue


def main(argv: list[str] | None = None) -> int:
    """Serve the venue until interrupted; prints the base URL first."""
    args = build_parser().parse_args(argv)
    try:
        venue = build_venue(args).start()
    except (OSError, ValueError) as error:
        print(f"bkit venue: {error}", file=sys.stderr)
        return 2
    started = datetime.fromtimestamp(venue.now_ms() / 1000, tz=UTC).isoformat()
    print(venue.base_url, flush=True)
    held = ", ".join(f"{asset}={free:f}" for asset, (free, _) in venue.balances().items())
    print(f"markets {', '.join(SHIPPED_CANDLES)}; market time {started}, x{args.speed:g}; "
          f"balances {held}", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(0.5)
            venue.match()
    except KeyboardInterrupt:
        pass
    finally:
        venue.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
