"""Binance error answers the venue gives: HTTP status, Binance code and the exact message.

The messages are Binance's own text: ccxt maps some of them by message (e.g. -2010 insufficient
balance), so they must match character for character.
"""

from __future__ import annotations

INSUFFICIENT_BALANCE = "Account has insufficient balance for requested action."
DUPLICATE_ORDER = "Duplicate order sent."
ORDER_NOT_FOUND = "Order does not exist."
UNKNOWN_ORDER = "Unknown order sent."


class VenueError(Exception):
    """A Binance error answer: `{"code": code, "msg": msg}` with HTTP `status`."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status, self.code, self.msg = status, code, msg

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}

    @classmethod
    def filter(cls, name: str) -> VenueError:
        """-1013 `Filter failure: NAME` (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL)."""
        return cls(400, -1013, f"Filter failure: {name}")

    @classmethod
    def insufficient_balance(cls) -> VenueError:
        return cls(400, -2010, INSUFFICIENT_BALANCE)

    @classmethod
    def duplicate(cls) -> VenueError:
        return cls(400, -2010, DUPLICATE_ORDER)

    @classmethod
    def not_found(cls) -> VenueError:
        """-2013 for an order lookup."""
        return cls(400, -2013, ORDER_NOT_FOUND)

    @classmethod
    def unknown_order(cls) -> VenueError:
        """-2011 for a cancel of an order that is not open."""
        return cls(400, -2011, UNKNOWN_ORDER)

    @classmethod
    def bad_symbol(cls) -> VenueError:
        return cls(400, -1121, "Invalid symbol.")

    @classmethod
    def missing(cls, name: str) -> VenueError:
        return cls(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                               "or malformed.")

    @classmethod
    def bad_param(cls, name: str) -> VenueError:
        return cls(400, -1100, f"Illegal characters found in parameter '{name}'; legal range "
                               "is '^[0-9]{1,20}(\\.[0-9]{1,20})?$'.")
