"""Scripted faults seen through the real ccxt client (notes/ccxt-binance-facts.md)."""

from __future__ import annotations

import threading
from typing import Any

import ccxt
import pytest

from bkit.venue import Venue, VenueFault
from tests.venue.conftest import make_client

ORDER = "/api/v3/order"


@pytest.mark.parametrize("status", [429, 418])
def test_rate_limits_raise_ddos_protection_with_retry_after(venue: Venue, client: Any,
                                                            status: int) -> None:
    venue.fail_next(ORDER, VenueFault.rate_limit(status, retry_after=7))
    with pytest.raises(ccxt.DDoSProtection):
        client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert client.last_response_headers["Retry-After"] == "7"
    assert venue.orders() == []
    client.create_order("BTC/USDT", "market", "buy", 0.01)  # the next one passes
    assert venue.request_count(ORDER) == 2


def test_timeout_after_accept_applies_the_order(venue: Venue) -> None:
    client = make_client(venue, timeout_ms=300)
    venue.fail_next("POST " + ORDER, VenueFault.timeout_after_accept(2))
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order("BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "t"})
    assert [o.status for o in venue.orders_for("t")] == ["FILLED"]
    assert client.fetch_order(None, "BTC/USDT", {"clientOrderId": "t"})["status"] == "closed"


def test_timeout_before_handling_applies_nothing(venue: Venue) -> None:
    client = make_client(venue, timeout_ms=300)
    venue.fail_next(ORDER, VenueFault.timeout(1))
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert venue.orders() == []


def test_disconnects(venue: Venue, client: Any) -> None:
    venue.fail_next(ORDER, VenueFault.disconnect())
    with pytest.raises(ccxt.NetworkError):
        client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert venue.orders() == []
    venue.fail_next(ORDER, VenueFault.disconnect_after_accept())
    with pytest.raises(ccxt.NetworkError):
        client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert len(venue.orders()) == 1


#: Measured with ccxt 4.5.90. A JSON 5xx body with a Binance code is matched by its code first:
#: -1000 / -1001 raise OperationFailed, which is NOT a NetworkError; only the HTML 502 page
#: gives ExchangeNotAvailable. All are "outcome unknown" for an order create.
@pytest.mark.parametrize(("fault", "error"), [
    (VenueFault.server_error(500), ccxt.OperationFailed),
    (VenueFault.server_error(502), ccxt.ExchangeNotAvailable),
    (VenueFault.server_error(503), ccxt.OperationFailed),
    (VenueFault.clock_skew(), ccxt.InvalidNonce),
    (VenueFault.auth_error(), ccxt.AuthenticationError),  # first private call
    (VenueFault.error(400, -1013, "Filter failure: LOT_SIZE"), ccxt.InvalidOrder),
])
def test_error_faults_map_to_ccxt_classes(venue: Venue, client: Any, fault: VenueFault,
                                          error: type[Exception]) -> None:
    venue.fail_next(ORDER, fault)
    with pytest.raises(error) as caught:
        client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert type(caught.value) is error
    assert venue.orders() == []


def test_auth_error_after_a_successful_private_call_is_ddos_protection(
        venue: Venue, client: Any) -> None:
    placed = client.create_order("BTC/USDT", "market", "buy", 0.01)
    venue.fail_next(ORDER, VenueFault.auth_error())
    with pytest.raises(ccxt.DDoSProtection):  # ccxt: hasAlreadyAuthenticatedSuccessfully
        client.fetch_order(placed["id"], "BTC/USDT")


def test_persistent_fault_on_one_method_and_any_thread(venue: Venue, client: Any) -> None:
    setter = threading.Thread(target=venue.set_fault,
                              args=("GET " + ORDER, VenueFault.server_error(503)))
    setter.start()
    setter.join()
    placed = client.create_order("BTC/USDT", "market", "buy", 0.01)  # POST unaffected
    for _ in range(2):
        with pytest.raises(ccxt.OperationFailed):
            client.fetch_order(placed["id"], "BTC/USDT")
    venue.set_fault("GET " + ORDER, None)
    assert client.fetch_order(placed["id"], "BTC/USDT")["status"] == "closed"
    assert venue.request_count(ORDER) == 4


def test_signed_endpoints_need_an_api_key(venue: Venue) -> None:
    import json
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{venue.base_url}/api/v3/account", timeout=5)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["code"] == -2014
    with urllib.request.urlopen(f"{venue.base_url}/api/v3/ping", timeout=5) as answer:
        assert json.loads(answer.read()) == {}
