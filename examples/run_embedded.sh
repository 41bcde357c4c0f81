#!/usr/bin/env bash
# Run examples/my_strategy.py on the embedded default (SQLite + a filesystem broker, nothing to
# install): one worker with beat inside it, market time replayed at 60x from 2019-10-11 01:00
# UTC, the start of the candles shipped with bkit. Ctrl-C stops it; state stays in
# .bkit-example/ (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export BKIT_HOME="${BKIT_HOME:-$PWD/.bkit-example}"
export BKIT_STRATEGIES=examples.my_strategy
export BKIT_REPLAY_START=2019-10-11T01:00:00Z
export BKIT_REPLAY_SPEED=60
export BKIT_REPLAY_EPOCH="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

bkit db upgrade
bkit enable my-momentum XRP/ETH --exchange my-paper
exec celery -A bkit worker -B -Q ticks,orders,maint --concurrency 2 --loglevel INFO
