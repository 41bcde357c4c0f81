"""The pure side of notifications: message texts, the error window, secret scrubbing."""

from __future__ import annotations

from datetime import UTC, datetime

from bkit.notify.messages import ErrorWindow, TradeFacts, event_message, scrub, secret_values

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _closed(event_id: int = 7) -> dict:
    return {"id": event_id, "kind": "signal", "action": "closed", "symbol": "BTC/USDT",
            "strategy_name": "momentum", "exchange_name": "binance", "signal_id": "s-1",
            "created_at": WHEN, "payload": {
                "close_reason": "take_profit", "current_price": 101.0,
                "signal": {"id": "s-1", "position": "long", "price_open": 100.0},
                "pnl": {"pnl_percentage": 0.4, "pnl_cost": 0.4, "price_open": 100.0,
                        "price_close": 101.0}}}


def test_a_close_in_broker_mode_leads_with_the_realised_pnl() -> None:
    trade = TradeFacts(realised_pnl_cost=-0.25, realised_pnl_percentage=-0.25,
                       pnl_cost=0.4, pnl_percentage=0.4, close_reason="take_profit")
    message = event_message(_closed(), trade)
    assert message is not None and message.id == "event-7" and message.level == "warning"
    assert message.title == "Closed long BTC/USDT · momentum@binance: -0.25 % (take_profit)"
    assert "realised PnL -0.25 % (-0.25 USDT, from fills and fees)" in message.body
    assert "signal PnL +0.40 % (+0.4 USDT)" in message.body
    assert "open 100 → close 101" in message.body and "2026-01-02 03:04:05 UTC" in message.body


def test_a_close_without_broker_shows_the_signal_pnl() -> None:
    message = event_message(_closed(), None)
    assert message is not None and message.level == "success"
    assert message.title.endswith(": +0.40 % (take_profit)")
    assert "PnL +0.40 % (+0.4 USDT, after fees and slippage)" in message.body


def test_ticks_risk_notices_and_other_admin_actions_are_not_messages() -> None:
    for kind, action in [("signal", "active"), ("signal", "idle"), ("risk", None),
                         ("admin", "disable"), ("error", None)]:
        assert event_message({"id": 1, "kind": kind, "action": action}) is None


def test_the_error_window_counts_per_key_and_lists_the_busiest_first() -> None:
    window = ErrorWindow()
    for event_id, symbol in enumerate(["A/B", "C/D", "C/D"], start=10):
        window.add({"id": event_id, "kind": "error", "symbol": symbol, "strategy_name": "s",
                    "exchange_name": "x", "message": f"boom {event_id}"}, now=1000.0)
    assert not window.due(1599.0, 600) and window.due(1600.0, 600)
    summary = ErrorWindow.from_dict(window.to_dict()).summary(1600.0)
    assert summary.id == "errors-10"
    assert summary.title == "3 errors on 2 keys in the last 10 min"
    assert summary.body.splitlines()[:2] == ["2× C/D · s@x: boom 12", "1× A/B · s@x: boom 10"]


def test_secrets_of_the_environment_and_of_urls_are_scrubbed() -> None:
    environ = {"BKIT_BINANCE_API_KEY": "key-1234567", "BKIT_BINANCE_SECRET": "sec-7654321",
               "BKIT_DATABASE_URL": "postgresql://bkit:dbpass99@db/bkit",
               "BKIT_NOTIFY_URLS": "tgram://123456789:AAbbCC-dd/-100, json://10.0.0.1/tok-abcdef1",
               "BKIT_TICK_SECONDS": "61", "HOME_SECRET": "not-bkit"}
    secrets = secret_values(environ)
    text = ("key-1234567 sec-7654321 dbpass99 123456789:AAbbCC-dd tok-abcdef1 "
            "?apiKey=zzz&signature=yyy token: qqq 61 not-bkit")
    assert scrub(text, secrets) == ("*** *** *** *** *** ?apiKey=***&signature=*** "
                                    "token: *** 61 not-bkit")
