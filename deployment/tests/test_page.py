"""The HTML page in a real headless Chromium (Debian's), driven by Playwright, against gunicorn."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from playwright.sync_api import Page

from testkit.browser import headless_page


@pytest.fixture
def page(server):
    with headless_page() as page:
        page.goto(server.url + "/")
        yield page


def predict(page: Page) -> None:
    page.evaluate("const r = document.getElementById('result'); r.textContent = ''; r.className = ''")
    page.click("#predict")
    page.wait_for_function(
        "document.getElementById('result').textContent.includes('Label') || "
        "document.getElementById('result').className === 'error'"
    )


def test_the_form_shows_label_and_probability_and_the_prediction_is_logged(page, companydata, trained) -> None:
    assert trained.version_ in page.text_content("#version")
    page.fill("#idx", "4242")
    page.select_option("#attr_b", "d")
    page.fill("#attr_a", "5")
    page.fill("#scd_a", "0.7")
    page.fill("#scd_b", "5")
    predict(page)
    label = page.text_content("#label")
    probability = float(page.text_content("#probability"))
    assert label in ("0", "1") and 0 <= probability <= 1
    expected = trained.predict_proba(pd.DataFrame([{"attr_a": 5, "attr_b": "d", "scd_a": 0.7, "scd_b": 5}]))[0, 1]
    assert abs(probability - expected) < 0.0005
    deadline = time.monotonic() + 30
    while companydata.query("SELECT label FROM prediction_log WHERE client_idx = 4242") != [(int(label),)]:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_client_without_activity_and_a_refusal_are_shown(page) -> None:
    page.fill("#scd_a", "")
    page.fill("#scd_b", "")
    predict(page)
    assert page.text_content("#label") in ("0", "1")
    # Past the browser's own check (step 1), a fractional scd_b reaches the API, which refuses it.
    page.evaluate("document.getElementById('scd_b').setAttribute('step', 'any')")
    page.fill("#scd_b", "1.5")
    predict(page)
    assert page.get_attribute("#result", "class") == "error"
    assert "features.scd_b" in page.text_content("#result")
