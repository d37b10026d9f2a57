"""A fake payment gateway client with the idempotency semantics of a real one."""

import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Capture:
    """A capture as the gateway recorded it."""

    capture_id: str
    authorization_id: str
    amount: Decimal
    currency: str


class GatewayError(Exception):
    """The gateway refused the request (it was understood: trying again will not help)."""


class FakeGatewayClient:
    """Stands in for a card processor's API.

    Like Stripe or Adyen, a capture sent again with the same idempotency key returns
    the first capture instead of charging twice, an authorization's capture can be
    looked up, and a voided authorization cannot be captured; ``captures`` lists real
    ones, ``authorizations`` the holds put on cards and ``voids`` those released.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Capture] = {}
        self.captures: list[Capture] = []
        self.authorizations: list[str] = []
        self.voids: set[str] = set()

    def authorize(self, *, amount: Decimal, currency: str) -> str:  # noqa: ARG002 - a fake
        """Reserve the amount on the card; returns the authorization id."""
        authorization_id = f"auth_{uuid.uuid4().hex}"
        with self._lock:
            self.authorizations.append(authorization_id)
        return authorization_id

    def capture(
        self, *, authorization_id: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> Capture:
        """Collect an authorized amount, at most once per idempotency key."""
        with self._lock:
            if idempotency_key in self._by_key:
                return self._by_key[idempotency_key]
            if authorization_id in self.voids:
                raise GatewayError(f"authorization {authorization_id} was voided")
            capture = Capture(f"cap_{uuid.uuid4().hex}", authorization_id, amount, currency)
            self._by_key[idempotency_key] = capture
            self.captures.append(capture)
            return capture

    def void(self, *, authorization_id: str) -> None:
        """Release the hold on the card; voiding twice changes nothing. A captured
        authorization cannot be voided (it is refunded)."""
        with self._lock:
            if any(c.authorization_id == authorization_id for c in self.captures):
                raise GatewayError(f"authorization {authorization_id} was captured")
            self.voids.add(authorization_id)

    def capture_of(self, *, authorization_id: str) -> Capture | None:
        """The capture made on an authorization, if any (as a gateway's lookup gives)."""
        with self._lock:
            return next((c for c in self.captures if c.authorization_id == authorization_id), None)


#: The process's gateway client.
gateway = FakeGatewayClient()
