"""The CI soak: 300 keys for 8 hours of replayed market time on real candles, orders through
the paper broker, random SIGKILLs of worker children and main processes, then the invariant
checker. To fit CI the beat ticks every 30 market minutes (16 ticks per key, 4,800 in all);
`bench/soak.py` runs the long soak: 1,000 keys for 24 hours with the live 61-second period
(1.44 million ticks), or this one's shape at 1,000 keys (README "Figures")."""

from __future__ import annotations

import pytest

from bench.soak import run_soak

#: Timed over market hours at a set speed: alone, so the other tests do not slow its ticks.
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

KEYS, HOURS, TICK_SECONDS, SPEED = 300, 8.0, 1800.0, 700.0


def test_soak_with_random_kills_keeps_every_invariant(tmp_path) -> None:
    result = run_soak(keys=KEYS, market_hours=HOURS, speed=SPEED, kill_every=5.0,
                      redis_db=10, home=tmp_path / "soak", tick_seconds=TICK_SECONDS)
    assert result.violations == []
    assert len(result.kills) >= 5
    assert any(k.startswith("main") for k in result.kills)
    assert any(k.startswith("child") for k in result.kills)
    assert result.opened > 0 and result.closed > 0
    # Most periods were ticked for every key despite the kills: a period's ticks that a
    # killed worker held, or that queued past their expiry, are dropped, never doubled.
    periods = HOURS * 3600 / TICK_SECONDS
    assert result.ticks >= 0.6 * KEYS * periods
    fanouts = (4 + HOURS * 3600 / SPEED) / (TICK_SECONDS / SPEED) + 2  # beat's, at most
    assert result.ticks <= KEYS * fanouts  # never more than once per key and fan-out


def test_soak_on_the_venue_ends_with_the_account_reconciled_to_the_step(tmp_path) -> None:
    """The same soak through the real ccxt client to the venue model (balances, the buy fee
    in the coin bought, step sizes, minimum notionals, a 0.5 s lookup lag), both sides traded,
    random kills; it ends with the venue's balances equal to the initial ones plus every fill
    bkit recorded, no open order bkit does not know, no order placed twice."""
    result = run_soak(keys=20, market_hours=3.0, speed=300.0, kill_every=6.0, redis_db=10,
                      home=tmp_path / "soak-venue", tick_seconds=300.0, venue=True)
    assert result.violations == []
    assert len(result.kills) >= 4
    assert result.opened > 10 and result.closed > 5
