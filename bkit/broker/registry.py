"""Which broker sends the orders of an exchange: registered with `Broker.use`, else chosen by
`BKIT_ORDER_BROKER` (none | paper | ccxt). None means signals only (SPEC §8)."""

from __future__ import annotations

import os
import threading

from bkit.broker.base import OrderBroker
from bkit.core.errors import BkitError

_explicit: dict[str, OrderBroker | None] = {}
_built: dict[tuple[int, str], OrderBroker] = {}
_lock = threading.Lock()
BROKER_KINDS = ("none", "paper", "ccxt")


class BrokerConfigError(BkitError):
    """The configured broker cannot serve this exchange."""


class Broker:
    """`Broker.use("binance", CcxtBroker(exchange))` routes that exchange's orders through it;
    `Broker.use("paper", None)` makes it signals-only whatever the settings say."""

    @staticmethod
    def use(exchange_name: str, broker: OrderBroker | None) -> None:
        with _lock:
            _explicit[exchange_name] = broker

    @staticmethod
    def clear() -> None:
        with _lock:
            _explicit.clear()
            _built.clear()


def broker_for(exchange_name: str) -> OrderBroker | None:
    """The broker of `exchange_name` in this process, or None (signals only)."""
    if exchange_name in _explicit:
        return _explicit[exchange_name]
    from bkit.settings import get_settings

    kind = get_settings().order_broker
    if kind not in BROKER_KINDS:
        raise BrokerConfigError(f"BKIT_ORDER_BROKER must be one of {BROKER_KINDS}, got {kind!r}")
    if kind == "none":
        return None
    slot = (os.getpid(), exchange_name)
    broker = _built.get(slot)
    if broker is None:
        with _lock:
            broker = _built.get(slot) or _build(kind, exchange_name)
            _built[slot] = broker
    return broker


def _build(kind: str, exchange_name: str) -> OrderBroker:
    from bkit.core.registry import REGISTRY, get_config
    from bkit.store.engine import get_engine

    if kind == "paper":
        from bkit.broker.paper_broker import PaperBroker
        from bkit.settings import get_settings

        config = get_config()
        return PaperBroker(get_engine(), config.CC_PERCENT_SLIPPAGE, config.CC_PERCENT_FEE,
                           exchange_name, quote_balance=get_settings().paper_balance)
    from bkit.broker.ccxt_broker import CcxtBroker
    from bkit.exchange.ccxt_exchange import CcxtExchange

    source = REGISTRY.exchange(exchange_name).source
    if not isinstance(source, CcxtExchange):
        raise BrokerConfigError(f"BKIT_ORDER_BROKER=ccxt needs exchange {exchange_name!r} to be "
                                "registered with add_ccxt_exchange")
    if is_futures_exchange(source):
        from bkit.broker.futures_broker import FuturesBroker

        config = get_config()
        return FuturesBroker(source, leverage=config.CC_LEVERAGE,
                             margin_mode=config.CC_MARGIN_MODE,
                             hedge=config.CC_POSITION_MODE == "hedge")
    return CcxtBroker(source)


def is_futures_exchange(source: object) -> bool:
    """A ccxt exchange that trades derivatives: binanceusdm, or `defaultType` swap/future."""
    options = getattr(source, "_options", {}) or {}
    return getattr(source, "exchange_id", "") in ("binanceusdm", "binancecoinm") or \
        options.get("defaultType") in ("swap", "future")
