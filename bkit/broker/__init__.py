"""Order brokers: the protocol, the ccxt and paper brokers, and broker selection."""

from bkit.broker.base import OrderBroker, OrderPlan, PlacedOrder
from bkit.broker.registry import Broker, BrokerConfigError, broker_for

__all__ = ["Broker", "BrokerConfigError", "OrderBroker", "OrderPlan", "PlacedOrder",
           "broker_for"]
