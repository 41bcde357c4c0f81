#!/usr/bin/env bash
# Scale-out on one machine: Redis and PostgreSQL (already running, e.g. from
# `docker compose up -d postgres redis` or your distribution's packages), exactly one beat,
# two tick workers, one orders worker, Flower and the metrics endpoint. Ctrl-C stops them all.
# On several machines run the same commands with the same BKIT_* settings, beat on one only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export BKIT_HOME="${BKIT_HOME:-$PWD/.bkit-cluster}"
export BKIT_BROKER_URL="${BKIT_BROKER_URL:-redis://127.0.0.1:6379/0}"
export BKIT_DATABASE_URL="${BKIT_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/bkit}"
export BKIT_STRATEGIES=examples.my_strategy
export BKIT_REPLAY_START=2019-10-11T01:00:00Z
export BKIT_REPLAY_SPEED=60
export BKIT_REPLAY_EPOCH="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
export BKIT_FLOWER_BASIC_AUTH="${BKIT_FLOWER_BASIC_AUTH:-admin:change-me}"

bkit db upgrade
bkit enable my-momentum XRP/ETH --exchange my-paper

trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
celery -A bkit beat --loglevel INFO &
celery -A bkit worker -Q ticks,maint -n ticks1@%h --concurrency 2 --loglevel INFO &
celery -A bkit worker -Q ticks,maint -n ticks2@%h --concurrency 2 --loglevel INFO &
celery -A bkit worker -Q orders -n orders@%h --concurrency 1 --loglevel INFO &
bkit flower --port 5555 &
bkit metrics --port 9808 &
wait
