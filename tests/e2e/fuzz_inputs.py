"""Hypothesis strategies and oracles for the bad-input fuzz tests: what a strategy may return,
what a candle feed may send, what `set_config` and the admin script may be given, how a
stored row may be edited into an impossible trade. Each oracle is written from SPEC
§2/§3 without calling bkit's own checks."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from bkit.core.config import CONFIG_KEYS
from bkit.core.signals import Signal
from bkit.store.tables import SignalRecord

MINUTE_MS = 60_000
SIGNAL_FIELDS = ("position", "price_take_profit", "price_stop_loss", "price_open",
                 "minute_estimated_time", "note", "id", "cost", "symbol")
#: Every symbol the fuzz tests tick starts with this.
SYMBOL_PREFIX = "FZ"
#: Beyond float range, and beyond Python's 4300-digit int→str limit.
HUGE_INTS = (10**400, -(10**400), 10**5000, -(10**5000))

nested_junk = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)
not_a_number = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, True, False, "100", "", "1e3", b"100",
                     Decimal("101.5"), Decimal("NaN"), complex(100, 0), [100.0], (100.0,),
                     {"price": 100.0}, frozenset({100.0})]),
    st.text(max_size=12), st.lists(nested_junk, min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=4), nested_junk, min_size=1, max_size=3))
not_positive = st.floats(max_value=0, allow_nan=False) | st.integers(max_value=0)
#: Never a valid price: every one must be rejected.
junk_price = not_a_number | not_positive | st.sampled_from(HUGE_INTS)
junk_position = st.one_of(
    st.text(max_size=8).filter(lambda s: s not in ("long", "short")),
    st.sampled_from(["LONG", "Long", " long", "short\n", "buy", None, 1, True, ["long"],
                     {"long": 1}, 10**5000, math.nan]))


def show(value: Any, limit: int = 300) -> str:
    """`repr` for labels, safe for ints past Python's 4300-digit str limit."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} holding an int past 4300 digits>"
    return text[:limit]


@dataclass
class Answer:
    """What the strategy returns at a given price, and whether SPEC §3 forbids it for sure."""

    build: Callable[[float], Any]
    must_fail: bool
    label: str

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return f"Answer({self.label})"


def _distance(draw: st.DrawFn) -> float:
    """A TP/SL distance from the entry (fraction): mostly inside the allowed band."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.floats(-0.5, 0.5))
    return draw(st.floats(0.006, 0.18))


@st.composite
def strategy_answers(draw: st.DrawFn, junk: bool = False) -> Answer:
    """A `get_signal` return value: top-level junk, or a dict / `Signal` whose fields are
    mostly plausible and sometimes junk. `junk=True`: always one SPEC §3 must reject."""
    shape = draw(st.sampled_from(["junk", "dict", "dict", "signal"]))
    if shape == "junk":
        value = draw(st.one_of(st.sampled_from(["long", 1, 1.5, True, False, 0, math.nan,
                                                10**5000, b"{}", (), [], {"long"}]),
                               nested_junk.filter(lambda v: v is not None and not
                                                  isinstance(v, dict)),
                               st.lists(nested_junk, min_size=1)))
        return Answer(lambda _price: value, True, f"junk {show(value)}")
    # At least one required field is junk when `junk`; otherwise each one rarely.
    forced = draw(st.sampled_from(["position", "price_take_profit", "price_stop_loss",
                                   "price_open", "symbol"])) if junk else None

    def spoiled(name: str) -> bool:
        return name == forced or draw(st.integers(0, 11)) == 0

    plan: dict[str, Any] = {}  # field -> ("x", factor) relative to the price, or ("v", value)
    must_fail = False
    position: Any = draw(st.sampled_from(["long", "short"]))
    sign = 1 if position == "long" else -1
    if spoiled("position"):
        position, must_fail = draw(junk_position), True
    plan["position"] = ("v", position)
    entry = 1.0
    if spoiled("price_open"):
        plan["price_open"], must_fail = ("v", draw(junk_price)), True
    elif draw(st.booleans()):
        entry = draw(st.floats(0.97, 1.03))
        plan["price_open"] = ("x", entry)
    for name, direction in (("price_take_profit", sign), ("price_stop_loss", -sign)):
        if spoiled(name):
            plan[name], must_fail = ("v", draw(junk_price)), True
        else:
            plan[name] = ("x", entry * (1 + direction * _distance(draw)))
    optional = {
        "minute_estimated_time": st.integers(1, 1440) | st.integers(1, 1440)
        | st.integers(-5, 3000) | st.floats(-5, 3000) | junk_price,
        "cost": st.floats(0.01, 1e6) | junk_price,
        "note": st.text(max_size=30) | nested_junk,
        "id": st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True) | nested_junk,
    }
    for name, values in optional.items():
        if draw(st.integers(0, 2)) == 0:
            plan[name] = ("v", draw(values))
    if spoiled("symbol"):
        plan["symbol"] = ("v", draw(st.text(max_size=10).filter(
            lambda s: not s.startswith(SYMBOL_PREFIX))))
        must_fail = True  # never the running symbol
    if shape == "dict" and draw(st.integers(0, 11)) == 0:
        extra = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in SIGNAL_FIELDS))
        plan[extra] = ("v", draw(nested_junk))
        must_fail = True

    def build(price: float) -> Any:
        fields = {k: price * v if kind == "x" else v for k, (kind, v) in plan.items()}
        return Signal(**fields) if shape == "signal" else fields

    return Answer(build, must_fail, f"{shape} {show(plan)}")


def check_stored_signal(stored: Any, given: dict[str, Any], price: float) -> None:
    """SPEC §3 on what was stored: every rule holds, and the prices are the ones given."""
    sign = 1 if stored.position == "long" else -1
    assert stored.position in ("long", "short") and stored.position == given["position"]
    values = (stored.price_open, stored.price_take_profit, stored.price_stop_loss, stored.cost)
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values), values
    assert stored.price_take_profit == float(given["price_take_profit"])
    assert stored.price_stop_loss == float(given["price_stop_loss"])
    assert sign * stored.price_take_profit > sign * stored.price_open > \
        sign * stored.price_stop_loss
    tp_distance = abs(stored.price_take_profit - stored.price_open) / stored.price_open * 100
    sl_distance = abs(stored.price_stop_loss - stored.price_open) / stored.price_open * 100
    assert tp_distance >= 0.5 - 1e-9 and 0.5 - 1e-9 <= sl_distance <= 20 + 1e-9
    assert isinstance(stored.minute_estimated_time, int)
    assert 1 <= stored.minute_estimated_time <= 1440
    assert isinstance(stored.note, str)
    if given.get("price_open") is None:
        assert stored.price_open == price  # immediate entry at the tick's VWAP


# --- candles ------------------------------------------------------------------------------

PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = ("timestamp", *PRICE_FIELDS, "volume")
bad_price = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0, -0.0, 0.0, "abc", "",
                             None, True, [1.0], "nan", "1e999", "-5", 10**400, {"v": 1}])
legal_price = st.sampled_from(["100.05", 100, 100.02, "99.99"])
bad_volume = st.sampled_from([math.nan, math.inf, -1.0, -1e-9, "x", None, True, 10**400,
                              "-2"])
legal_volume = st.sampled_from([0, 0.0, "3", 1e-300, 1e6])


def good_window(since_ms: int, base: float = 100.0, count: int = 5) -> list[dict[str, Any]]:
    """`count` gap-free sane 1m candles from `since_ms` around `base`."""
    return [{"timestamp": since_ms + i * MINUTE_MS, "open": base, "high": base * 1.001,
             "low": base * 0.999, "close": base * (1 + 0.0002 * i), "volume": 1.0 + i}
            for i in range(count)]


@st.composite
def candle_feeds(draw: st.DrawFn, since_ms: int) -> tuple[list[Any], list[str]]:
    """The 5-minute window of a tick after 1-3 edits (gaps, duplicates, NaN, zero volume, out
    of order, negative, strings, missing fields, forming/old candles, list rows)."""
    rows: list[Any] = good_window(since_ms)
    done: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["gap", "zero_volume", "set_price", "set_volume",
                                     "duplicate", "swap", "old", "forming", "as_list",
                                     "short_list", "missing", "high_below_low", "empty"]))
        dicts = [i for i, r in enumerate(rows) if isinstance(r, dict)]
        if edit == "empty":
            rows = []
        elif edit == "old":
            rows.insert(0, good_window(since_ms - MINUTE_MS, count=1)[0])
        elif edit == "forming":
            rows.append(good_window(since_ms + 5 * MINUTE_MS, count=draw(st.integers(1, 2)))[0])
        elif not rows or (edit not in ("gap", "duplicate", "swap") and not dicts):
            continue
        elif edit == "gap":
            del rows[draw(st.integers(0, len(rows) - 1))]
        elif edit == "duplicate":
            i = draw(st.integers(0, len(rows) - 1))
            rows.insert(i + 1, rows[i])
        elif edit == "swap":
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
        else:
            i = draw(st.sampled_from(dicts))
            row = dict(rows[i])
            if edit == "zero_volume":
                row["volume"] = 0
            elif edit == "set_price":
                row[draw(st.sampled_from(PRICE_FIELDS))] = draw(bad_price | legal_price)
            elif edit == "set_volume":
                row["volume"] = draw(bad_volume | legal_volume)
            elif edit == "missing":
                row.pop(draw(st.sampled_from(FIELDS[1:])), None)
            elif edit == "high_below_low":
                row["high"], row["low"] = row.get("low"), row.get("high")
            rows[i] = row
            if edit == "as_list":
                rows[i] = [row.get(f) for f in FIELDS]
            elif edit == "short_list":
                rows[i] = [row.get(f) for f in FIELDS][:5]
        done.append(edit)
    return rows, done


def _number(value: Any) -> float | None:
    """A finite float for a number or numeric string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) else None
    except (ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


@dataclass(frozen=True)
class FeedVerdict:
    """What SPEC §2 says a tick on this feed must do: `bad` (timestamp of the first bad
    candle), `none` (no closed candle in the window) or `price` (the VWAP)."""

    kind: str
    timestamp: int | None = None
    price: float | None = None


def _candle_numbers(row: Any) -> dict[str, float] | None:
    """The candle's numbers if SPEC §2 accepts it (finite, prices > 0, volume >= 0,
    high >= low), else None."""
    values = dict(zip(FIELDS, row, strict=False)) if isinstance(row, list) else row
    numbers = {f: _number(values.get(f)) for f in FIELDS[1:]}
    clean = {f: v for f, v in numbers.items() if v is not None}
    if (isinstance(row, list) and len(row) < 6) or len(clean) < len(numbers):
        return None
    if any(clean[f] <= 0 for f in PRICE_FIELDS) or clean["volume"] < 0 \
            or clean["high"] < clean["low"]:
        return None
    return clean


def judge_feed(rows: list[Any], since_ms: int, when_ms: int) -> FeedVerdict:
    previous: int | None = None
    good: list[dict[str, float]] = []
    for row in rows:
        timestamp = int(row[0] if isinstance(row, list) else row["timestamp"])
        numbers = _candle_numbers(row)
        if numbers is None or (previous is not None and timestamp <= previous):
            return FeedVerdict("bad", timestamp)
        previous = timestamp
        good.append({"timestamp": timestamp, **numbers})
    window = [c for c in good if since_ms <= c["timestamp"] < when_ms]
    if not window:
        return FeedVerdict("none")
    volume = sum(c["volume"] for c in window)
    if volume == 0:
        return FeedVerdict("price", price=sum(c["close"] for c in window) / len(window))
    weighted = sum((c["high"] + c["low"] + c["close"]) / 3 * c["volume"] for c in window)
    return FeedVerdict("price", price=weighted / volume)


# --- config -------------------------------------------------------------------------------

config_keys = st.sampled_from(CONFIG_KEYS) | st.text(min_size=1, max_size=20).filter(
    lambda k: k != "unsafe")
config_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 3000),
    st.floats(0, 50), st.sampled_from([*HUGE_INTS, True, False, None, "1", "0.5", b"1",
                                       Decimal("0.5"), [1], {"v": 1}, complex(1, 0)]))


# --- admin script arguments ----------------------------------------------------------

FUZZ_STRATEGIES = ("fz-trend", "fz-quiet")
FUZZ_EXCHANGES = ("fz-paper", "fz-paper-2")
KEY_COMMANDS = ("enable", "disable", "drain", "pause", "resume")
#: Created only if an argument ever reached a shell.
PWNED = Path(tempfile.gettempdir()) / f"bkit-pwned-{os.getpid()}"
odd_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
odd_names = odd_text | st.sampled_from([
    "", " ", "-", "--", "-x", "--all", f"$(touch {PWNED})", f"`touch {PWNED}`", "; ls", "a|b",
    "&&", "'", '"', "../../etc/passwd", "%s%n%x", "x" * 300, "名前/通貨", "XRP/ETH\n",
    "ＸＲＰ/ＥＴＨ", "\u202eHTE/PRX", "fz-trend ", "FZ-TREND", "fz_trend", "xrp/eth",
    "XRP/ETH;rm -rf ~", "{}", "\\", "*", "?", "~", "XRP/ETH\t"])


#: Odd but valid: these must succeed.
MUST_SUCCEED = (
    ("pause", "fz-trend", "XRP/ETH", "--exchange", "fz-paper", "--actor",
     f"$(touch {PWNED}) ' OR 1=1 -- 名前"),
    ("enable", "fz-quiet", "XRP/ETH", "--exchange", "fz-paper-2"),
    ("disable", "fz-trend", "--all", "--exchange", "fz-paper", "--actor", "`id`;"),
    ("status", "名前/通貨", "--exchange", "; ls", "--json"),
)


def _real_or_odd(draw: st.DrawFn, real: st.SearchStrategy[str]) -> str:
    return draw(real if draw(st.integers(0, 4)) else odd_names)


@st.composite
def admin_argv(draw: st.DrawFn) -> tuple[list[str], bool]:
    """An argv for `bkit` and whether it names something unknown (strategy, exchange or
    symbol) for a command that changes keys."""
    command = draw(st.sampled_from([*KEY_COMMANDS, *KEY_COMMANDS, "status", "report",
                                    "strategies"]))
    strategy = _real_or_odd(draw, st.sampled_from(FUZZ_STRATEGIES))
    symbols = [_real_or_odd(draw, st.just("XRP/ETH")) for _ in range(draw(st.integers(0, 3)))]
    exchange = None if draw(st.integers(0, 4)) == 0 else _real_or_odd(
        draw, st.sampled_from(FUZZ_EXCHANGES))
    argv = [command]
    if command != "strategies":
        argv.append(strategy)
    if command not in ("status", "strategies"):
        argv += symbols
    if exchange is not None and command != "strategies":
        argv += ["--exchange", exchange]
    for flag in draw(st.lists(st.sampled_from(["--all", "--force", "--json", "--per-key",
                                               "--bogus", "--actor", "--reason"]),
                              max_size=draw(st.integers(0, 2)))):
        argv += [flag, draw(odd_names)] if flag in ("--actor", "--reason") else [flag]
    unknown = command in KEY_COMMANDS and (
        strategy not in FUZZ_STRATEGIES or exchange not in FUZZ_EXCHANGES
        or any(s != "XRP/ETH" for s in symbols))
    return argv, unknown


# --- hand-edited rows -----------------------------------------------------------------

def impossible_edit(field: str, value: Any, record: SignalRecord) -> dict[str, Any]:
    """An edit that makes the stored long trade impossible (SPEC §3 on a stored row)."""
    if field == "wrong_side_tp":
        return {"price_take_profit": record.price_open * (1 - value)}
    if field == "wrong_side_sl":
        return {"price_stop_loss": record.price_open * (1 + value)}
    if field == "tp_at_entry":
        return {"price_take_profit": record.price_open}
    if field == "open_outside":
        return {"price_open": record.price_take_profit * (1 + value)}
    if field == "position":
        return {"position": "sideways"}
    if field == "lifetime":
        return {"minute_estimated_time": -int(value * 100)}
    return {field: value}


impossible_edits = st.one_of(
    st.tuples(st.sampled_from(["wrong_side_tp", "wrong_side_sl", "open_outside", "lifetime"]),
              st.floats(0.001, 0.5)),
    st.tuples(st.sampled_from(["tp_at_entry", "position"]), st.none()),
    st.tuples(st.sampled_from(["price_open", "price_take_profit", "price_stop_loss", "cost"]),
              st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-9,
                               -123.5])))
