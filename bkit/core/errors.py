"""Errors raised by the pure core. Each names what was wrong, so a user can fix it."""

from __future__ import annotations


class BkitError(Exception):
    """Base of every error bkit raises on purpose."""


class ConfigError(BkitError, ValueError):
    """A `set_config` value was rejected; the previous config stays in place."""


class RegistrationError(BkitError, ValueError):
    """A schema passed to add_exchange / add_strategy / add_risk is invalid or a duplicate."""


class UnknownNameError(BkitError, ValueError):
    """A strategy, exchange or risk name that was never registered."""


class SignalValidationError(BkitError, ValueError):
    """A strategy returned a signal that must not be traded. `reasons` lists every failed rule."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("invalid signal: " + "; ".join(self.reasons))
