"""The six position commands of SPEC §11 as one API, shared by `Live` (queued for the live
key's next tick) and `Backtest` (queued for the running backtest's key): each subclass
implements `_commit(symbol, strategy_name, exchange_name, name, value)` and returns the
command's id."""

from __future__ import annotations


class PositionCommandsApi:
    """`commit_*(symbol, strategy_name, exchange_name, …)`, applied on the key's next tick
    (a minute later in a backtest) at that tick's price; a refused one is an error event."""

    def _commit(self, symbol: str, strategy_name: str, exchange_name: str, name: str,
                value: float | None) -> int:
        raise NotImplementedError

    def commit_partial_profit(self, symbol: str, strategy_name: str, exchange_name: str,
                              percent: float) -> int:
        """Close `percent` (0 < p ≤ 100) of the remaining cost basis in profit. Returns the
        command id; the tick records whether it was accepted (`command_status`)."""
        return self._commit(symbol, strategy_name, exchange_name, "partial_profit", percent)

    def commit_partial_loss(self, symbol: str, strategy_name: str, exchange_name: str,
                            percent: float) -> int:
        """Close `percent` of the remaining cost basis at a loss."""
        return self._commit(symbol, strategy_name, exchange_name, "partial_loss", percent)

    def commit_trailing_stop(self, symbol: str, strategy_name: str, exchange_name: str,
                             shift: float) -> int:
        """Move the SL by `shift` percentage points of the original distance (−: tighter)."""
        return self._commit(symbol, strategy_name, exchange_name, "trailing_stop", shift)

    def commit_trailing_take(self, symbol: str, strategy_name: str, exchange_name: str,
                             shift: float) -> int:
        """Move the TP by `shift` percentage points (later calls only more conservative)."""
        return self._commit(symbol, strategy_name, exchange_name, "trailing_take", shift)

    def commit_breakeven(self, symbol: str, strategy_name: str, exchange_name: str) -> int:
        """Move the SL to the effective entry once breakeven is reached."""
        return self._commit(symbol, strategy_name, exchange_name, "breakeven", None)

    def commit_average_buy(self, symbol: str, strategy_name: str, exchange_name: str,
                           cost: float | None = None) -> int:
        """Add an entry (DCA) of `cost` (quote currency; default CC_POSITION_ENTRY_COST)."""
        return self._commit(symbol, strategy_name, exchange_name, "average_buy", cost)
