"""Per-client API keys through the app: who asked is checked, and recorded with every prediction."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from data_science.features import EXAMPLE_REQUEST
from deployment import keys
from deployment.keys import KeyRing, create_key, revoke_key

TOKEN = "a-long-shared-token-for-tests"


@pytest.fixture
def keyring(companydata) -> Iterator[KeyRing]:
    ring = KeyRing(companydata.settings("mle"))
    yield ring
    ring.stop()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def predict(client, idx: int, headers: dict[str, str] | None = None):
    return client.post("/predict", json={**EXAMPLE_REQUEST, "idx": idx}, headers=headers or {})


def logged_keys(db) -> dict[int, str | None]:
    return dict(db.query("SELECT client_idx, api_key FROM prediction_log"))


def test_each_client_key_is_checked_and_recorded_and_revocation_takes_effect(
    make_app, companydata, logger, keyring
) -> None:
    admin = companydata.settings("api_admin")
    acme, _ = create_key(admin, "acme")
    globex, _ = create_key(admin, "globex")
    keyring.refresh()
    client = make_app(keyring=keyring).test_client()
    assert predict(client, 1).status_code == 401  # keys exist: the API is closed
    forged = acme[:-4] + ("AAAA" if not acme.endswith("AAAA") else "BBBB")
    assert predict(client, 2, bearer(forged)).status_code == 401
    assert predict(client, 3, bearer(acme)).status_code == 200
    assert predict(client, 4, bearer(globex)).status_code == 200
    assert client.post("/predict/batch", json=[{**EXAMPLE_REQUEST, "idx": 5}], headers=bearer(acme)).status_code == 200
    revoke_key(admin, "acme")
    keyring.refresh()
    assert predict(client, 6, bearer(acme)).status_code == 401
    assert predict(client, 7, bearer(globex)).status_code == 200
    assert logger.flush()
    assert logged_keys(companydata) == {3: "acme", 4: "globex", 5: "acme", 7: "globex"}
    assert client.get("/openapi.json").json["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]


def test_revoking_the_last_key_does_not_open_the_api(make_app, companydata, keyring) -> None:
    admin = companydata.settings("api_admin")
    key, _ = create_key(admin, "only")
    revoke_key(admin, "only")
    keyring.refresh()
    client = make_app(keyring=keyring).test_client()
    assert predict(client, 1).status_code == 401 and predict(client, 2, bearer(key)).status_code == 401


def test_api_token_is_the_single_key_shortcut_beside_keys(make_app, companydata, logger, keyring) -> None:
    key, _ = create_key(companydata.settings("api_admin"), "acme")
    keyring.refresh()
    client = make_app(keyring=keyring, api_token=TOKEN).test_client()
    assert predict(client, 1, bearer(TOKEN)).status_code == 200
    assert predict(client, 2, bearer(key)).status_code == 200
    assert predict(client, 3, bearer(TOKEN + "x")).status_code == 401
    assert predict(client, 4, {"Authorization": TOKEN}).status_code == 401  # the scheme is required
    assert logger.flush() and logged_keys(companydata) == {1: "API_TOKEN", 2: "acme"}


def test_an_open_api_records_no_key(make_app, companydata, logger, keyring) -> None:
    keyring.refresh()
    client = make_app(keyring=keyring).test_client()
    assert predict(client, 1).status_code == 200 and predict(client, 2, bearer("anything")).status_code == 200
    assert logger.flush() and logged_keys(companydata) == {1: None, 2: None}


def test_an_unreadable_key_table_fails_closed_and_the_token_still_works(make_app, companydata) -> None:
    ring = KeyRing(companydata.settings("mle").model_copy(update={"password": "wrong"}))
    assert not ring.refresh()
    key, _ = create_key(companydata.settings("api_admin"), "acme")
    closed = make_app(keyring=ring).test_client()  # no token, no readable keys: nobody can be checked
    assert predict(closed, 1).status_code == 401
    unavailable = predict(closed, 2, bearer(key))
    assert unavailable.status_code == 503 and "key table is unavailable" in unavailable.json["details"][0]["problem"]
    with_token = make_app(keyring=ring, api_token=TOKEN).test_client()
    assert predict(with_token, 3, bearer(TOKEN)).status_code == 200
    assert predict(with_token, 4, bearer(key)).status_code == 503
    assert with_token.get("/ready").json["api_keys"] == "unavailable"


def test_a_key_created_after_the_last_refresh_works_at_once(
    make_app, companydata, logger, keyring, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "ON_DEMAND_REFRESH_SECONDS", 0.0)
    keyring.refresh()  # no keys yet: the API is open
    client = make_app(keyring=keyring).test_client()
    key, _ = create_key(companydata.settings("api_admin"), "fresh")
    assert predict(client, 1, bearer(key)).status_code == 200  # an unknown key_id re-reads the table
    assert predict(client, 2).status_code == 401  # ... and from then on keys are required
    assert logger.flush() and logged_keys(companydata) == {1: "fresh"}


def test_key_shaped_garbage_rereads_the_table_at_most_once_a_second(make_app, companydata, keyring) -> None:
    keyring.refresh()
    reads = []
    refresh = keyring.refresh
    keyring.refresh = lambda: reads.append(1) or refresh()  # type: ignore[method-assign]
    client = make_app(keyring=keyring).test_client()
    started = time.monotonic()
    for n in range(50):
        garbage = f"{keys.PREFIX}{n:08d}_{'x' * keys.SECRET_LENGTH}"
        assert predict(client, n, bearer(garbage)).status_code == 200  # open API: ignored, not hashed
    assert len(reads) <= 1 + (time.monotonic() - started) / keys.ON_DEMAND_REFRESH_SECONDS
