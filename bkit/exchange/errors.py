"""The exchange error hierarchy. ccxt exceptions are translated into these at the boundary
(`bkit.exchange.ccxt_exchange`); nothing above that layer sees a raw ccxt exception.

How callers react:

- `TransientExchangeError`: the outcome is unknown or the venue is busy. Retry reads with
  backoff (longer when `rate_limited`); before re-sending an order, look it up by client id.
- `DefinitiveExchangeError`: the venue said no. Never retry as is; `kind` says why.
- `OrderNotFoundError`: the venue has no such order (yet). Retry briefly, then treat as not placed.
- `UnknownExchangeError`, `MissingCredentialsError`: configuration mistakes, fixed by a human.
"""

from __future__ import annotations

from typing import Any

from bkit.core.errors import BkitError

#: The `kind` values a `DefinitiveExchangeError` may carry.
DEFINITIVE_KINDS: frozenset[str] = frozenset({
    "insufficient_funds",  # not enough balance for the order
    "invalid_order",  # rejected by the venue's order rules (size, price, type…)
    "duplicate_order",  # the client order id is already in use: an earlier attempt landed
    "bad_symbol",  # the venue does not list this market
    "bad_request",  # a malformed request (parameter missing, out of range…)
    "auth",  # credentials missing, invalid or without permission
    "rejected",  # the venue refused the operation (market closed, no change…)
    "not_supported",  # the venue or its ccxt class cannot do this
    "exchange_error",  # any other definitive refusal
})


class ExchangeError(BkitError):
    """Base of every exchange failure. Messages never contain credentials.

    `exchange_name` is the registered bkit name, `operation` the method that failed (e.g.
    `"get_candles"`), `ccxt_error` the name of the translated ccxt class ('' if none).
    """

    def __init__(self, message: str, *, exchange_name: str = "", operation: str = "",
                 ccxt_error: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exchange_name = exchange_name
        self.operation = operation
        self.ccxt_error = ccxt_error


class TransientExchangeError(ExchangeError):
    """The call may succeed later: network error, time-out, venue busy, rate limit.

    An order call that ends like this may or may not have been placed. `rate_limited` is True
    when the venue asked us to slow down (HTTP 429/418): back off for longer, at least
    `retry_after_s` (s) when the venue said so.
    """

    def __init__(self, message: str, *, rate_limited: bool = False,
                 retry_after_s: float | None = None, exchange_name: str = "",
                 operation: str = "", ccxt_error: str = "") -> None:
        super().__init__(message, exchange_name=exchange_name, operation=operation,
                         ccxt_error=ccxt_error)
        self.rate_limited = rate_limited
        self.retry_after_s = retry_after_s


class DefinitiveExchangeError(ExchangeError):
    """The venue refused: retrying the same call gives the same answer. See `DEFINITIVE_KINDS`."""

    def __init__(self, message: str, *, kind: str = "exchange_error", exchange_name: str = "",
                 operation: str = "", ccxt_error: str = "") -> None:
        if kind not in DEFINITIVE_KINDS:
            raise ValueError(f"unknown definitive error kind {kind!r}")
        super().__init__(message, exchange_name=exchange_name, operation=operation,
                         ccxt_error=ccxt_error)
        self.kind = kind


class OrderNotFoundError(ExchangeError):
    """The venue knows no order with this id. Right after placing, this can be lag."""


class UnknownExchangeError(ExchangeError, ValueError):
    """The ccxt exchange id does not exist (typo, or a venue ccxt does not support)."""


class MissingCredentialsError(DefinitiveExchangeError):
    """A private call (orders, balances) without API key/secret in the environment."""

    def __init__(self, message: str, *, kind: str = "auth", exchange_name: str = "",
                 operation: str = "", ccxt_error: str = "") -> None:
        super().__init__(message, kind="auth", exchange_name=exchange_name,
                         operation=operation, ccxt_error=ccxt_error)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _retry_after_s(client: Any) -> float | None:
    headers = getattr(client, "last_response_headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def translate_ccxt_error(exc: BaseException, exchange_name: str, operation: str,
                         client: Any = None, secrets: list[str] | None = None) -> ExchangeError:
    """The bkit error for an exception raised inside a ccxt call (credentials scrubbed).

    Classified on ccxt's base classes: `OperationFailed` and children are transient (429/418 →
    `rate_limited`), `ExchangeError` children are definitive, with "Duplicate order sent."
    (binance answers it as `InvalidOrder`) as `duplicate_order`. A non-ccxt exception from inside
    ccxt (e.g. a parser choking on a garbled answer) is transient: the outcome is unknown.
    """
    import ccxt

    name = type(exc).__name__
    text = _scrub(str(exc), secrets or [])
    message = f"{exchange_name} {operation} failed: {name}: {text}"
    if not isinstance(exc, ccxt.BaseError) or isinstance(exc, ccxt.OperationFailed):
        rate_limited = isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded)
        return TransientExchangeError(
            message, rate_limited=rate_limited,
            retry_after_s=_retry_after_s(client) if rate_limited else None,
            exchange_name=exchange_name, operation=operation, ccxt_error=name)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFoundError(message, exchange_name=exchange_name, operation=operation,
                                  ccxt_error=name)
    duplicate = isinstance(exc, ccxt.DuplicateOrderId) or (
        isinstance(exc, ccxt.InvalidOrder) and "duplicate" in text.lower())
    kinds: list[tuple[bool, str]] = [
        (duplicate, "duplicate_order"),
        (isinstance(exc, ccxt.InsufficientFunds), "insufficient_funds"),
        (isinstance(exc, ccxt.BadSymbol), "bad_symbol"),
        (isinstance(exc, ccxt.AuthenticationError), "auth"),
        (isinstance(exc, ccxt.InvalidOrder), "invalid_order"),
        (isinstance(exc, ccxt.NotSupported), "not_supported"),
        (isinstance(exc, ccxt.OperationRejected), "rejected"),
        (isinstance(exc, ccxt.BadRequest | ccxt.ArgumentsRequired), "bad_request"),
    ]
    kind = next((k for matched, k in kinds if matched), "exchange_error")
    return DefinitiveExchangeError(message, kind=kind, exchange_name=exchange_name,
                                   operation=operation, ccxt_error=name)
