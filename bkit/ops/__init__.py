"""Operator tooling: what an operator runs against a live bkit (resolving stuck positions,
reconciliation reports)."""
