"""The CI soak: 1,000 keys for 24 hours of replayed market time on real candles, orders through
the paper broker, random SIGKILLs of worker children and main processes, then the invariant
checker. To fit CI the beat ticks every 30 market minutes (48 ticks per key, 48,000 in all);
`bench/soak.py` runs the same soak with the live 61-second period (1.44 million ticks)."""

from __future__ import annotations

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.integration

KEYS, HOURS, TICK_SECONDS, SPEED = 1000, 24.0, 1800.0, 1200.0


def test_soak_with_random_kills_keeps_every_invariant(tmp_path) -> None:
    result = run_soak(keys=KEYS, market_hours=HOURS, speed=SPEED, kill_every=8.0,
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
