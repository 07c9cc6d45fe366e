"""Who may ask for predictions.

When `API_TOKEN` is set or any API key was ever created (`companydata-api-keys`),
`/predict` and `/predict/batch` need `Authorization: Bearer <token or key>`; otherwise the API
is open. If the key table could not be read since start, the API cannot tell and fails closed
(503), unless the request carries `API_TOKEN`.
"""

from __future__ import annotations

import hmac

from flask import request

from deployment.errors import ApiError
from deployment.keys import KeyRing, KeyStoreUnavailable

# Recorded as the api_key of predictions made with the single shared API_TOKEN.
TOKEN_NAME = "API_TOKEN"


class Guard:
    def __init__(self, api_token: str | None, keyring: KeyRing | None) -> None:
        self.api_token = api_token
        self.keyring = keyring

    def required(self) -> bool:
        if self.api_token:
            return True
        return self.keyring is not None and (not self.keyring.loaded or self.keyring.has_keys)

    def caller(self) -> str | None:
        """Who asks: a key's name, TOKEN_NAME, or None on an open API; else 401 / 503."""
        # The header straight from the WSGI environ (what `request.headers` reads, without its lookup).
        scheme, _, credential = request.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        presented = scheme.lower() == "bearer" and bool(credential)
        if presented:
            if self.api_token and hmac.compare_digest(credential.encode(), self.api_token.encode()):
                return TOKEN_NAME
            try:
                name = self.keyring.authenticate(credential) if self.keyring is not None else None
            except KeyStoreUnavailable:
                name = None
            if name is not None:
                return name
        if not self.required():
            return None
        if presented and self.keyring is not None and not self.keyring.loaded:
            raise ApiError(
                503,
                "API keys cannot be checked right now",
                [{"field": "Authorization", "problem": f"the key table is unavailable ({self.keyring.last_error})"}],
            )
        raise ApiError(
            401,
            "missing or wrong bearer token",
            [{"field": "Authorization", "problem": "expected 'Bearer <API key or token>'"}],
        )
