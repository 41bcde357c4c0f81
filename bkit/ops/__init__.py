"""Operator tooling: what an operator runs against a live bkit: the admin operations behind
the `bkit` script (`admin`), resolving stuck positions (`resolve`), the read-only dashboard,
the worker watchdog (`supervisor`) and Flower's launch settings (`flower_config`)."""
