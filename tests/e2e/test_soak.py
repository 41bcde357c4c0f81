"""The CI-sized soak: 100 keys for 1 hour of replayed market time on real candles, orders
through the paper broker, random SIGKILLs of worker children and main processes, then the
invariant checker. `bench/soak.py` runs the long variant (1,000 keys, 24 market hours)."""

from __future__ import annotations

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.integration


def test_soak_with_random_kills_keeps_every_invariant(tmp_path) -> None:
    result = run_soak(keys=100, market_hours=1.0, speed=60.0, kill_every=10.0,
                      redis_db=10, home=tmp_path / "soak")
    assert result.violations == []
    assert len(result.kills) >= 3
    assert any(k.startswith("main") for k in result.kills) or len(result.kills) >= 5
    assert result.opened > 0 and result.closed > 0
    # Most minutes were ticked for every key despite the kills (60 market minutes x 100 keys).
    assert result.ticks >= 0.5 * 100 * 60
