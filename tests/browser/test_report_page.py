"""The exceptions report page in headless Chromium: every row reachable, sorting works.

Builds the report of a generated world (:meth:`Reconciliation.to_html`), opens it from disk
(``file://``, no server: the page must work offline) and drives its filters and column
headings the way an analyst would. Screenshots go to ``.artifacts/``.

Needs Debian's ``chromium`` (``apt-get install chromium``); skips, saying so, only when
the Chromium binary is missing (``lab.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from playwright.sync_api import Browser, Page

from scfeeds._report import exception_rows
from tests.browser.lab import ARTIFACTS
from tests.synth_support import reconcile_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The visible rows as (code, supplier, PO, line, invoice, amount at risk as data-v).
VISIBLE = """() => Array.from(document.querySelectorAll('#exc tbody tr'))
  .filter(r => !r.hidden)
  .map(r => [r.cells[0].textContent, r.cells[1].textContent, r.cells[5].textContent,
             r.cells[6].textContent, r.cells[8].textContent, r.cells[2].getAttribute('data-v')])"""
SCROLL_TO_FILTERS = (
    "() => window.scrollBy(0, document.getElementById('f-text').getBoundingClientRect().top - 80)"
)


@pytest.fixture(scope="module")
def report(
    make_world: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, pl.DataFrame]:
    rec = reconcile_world(make_world(seed=5, pos=120, suppliers=4))
    rows = exception_rows(rec)
    assert rows.height > 50
    return rec.to_html(tmp_path_factory.mktemp("report") / "exceptions.html"), rows


@pytest.fixture(scope="module")
def page(report: tuple[Path, pl.DataFrame], browser: Browser) -> Iterator[Page]:
    pg = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        pg.goto(report[0].as_uri())
        pg.wait_for_selector("#exc tbody tr")
        yield pg
        assert errors == []  # no script error, no blocked resource (CSP violations log here)
    finally:
        pg.close()


def key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        "" if row[c] is None else str(row[c])
        for c in ("code", "supplier_id", "po_number", "line_number", "invoice_number")
    )


def visible(page: Page) -> list[list[str]]:
    rows: list[list[str]] = page.evaluate(VISIBLE)
    return rows


def reset(page: Page) -> None:
    page.click("#f-reset")
    page.wait_for_function(
        "() => document.getElementById('shown').textContent === "
        "document.querySelectorAll('#exc tbody tr').length.toLocaleString('en-US')"
    )


def test_every_row_is_reachable_by_the_filters(
    page: Page, report: tuple[Path, pl.DataFrame]
) -> None:
    _, rows = report
    reset(page)
    assert len(visible(page)) == rows.height
    reached: set[tuple[str, ...]] = set()
    for sup in rows["supplier_id"].unique().sort().to_list():
        page.select_option("#f-supplier", sup)
        for code in rows.filter(pl.col("supplier_id") == sup)["code"].unique().to_list():
            page.select_option("#f-code", code)
            want = rows.filter((pl.col("supplier_id") == sup) & (pl.col("code") == code))
            got = visible(page)
            assert sorted(tuple(r[:5]) for r in got) == sorted(key(r) for r in want.to_dicts())
            assert page.text_content("#shown") == f"{want.height:,}"
            reached.update(tuple(r[:5]) for r in got)
        page.select_option("#f-code", "")
    assert reached == {key(r) for r in rows.to_dicts()}
    page.select_option("#f-supplier", rows["supplier_id"][0])
    page.select_option("#f-code", rows["code"][0])
    page.evaluate(SCROLL_TO_FILTERS)
    page.screenshot(path=str(ARTIFACTS / "report-filtered.png"))
    reset(page)


def test_text_and_amount_filters(page: Page, report: tuple[Path, pl.DataFrame]) -> None:
    _, rows = report
    reset(page)
    number = rows["invoice_number"].drop_nulls()[0]
    page.fill("#f-text", number.lower())
    want = rows.filter(
        pl.concat_str(pl.all().cast(pl.String).fill_null(""))
        .str.to_lowercase()
        .str.contains(number.lower(), literal=True)
    )
    page.wait_for_function(
        f"() => document.getElementById('shown').textContent === '{want.height}'"
    )
    assert all(number in r for r in visible(page))
    reset(page)
    risks = sorted(rows["amount_at_risk"].drop_nulls().to_list())
    limit = risks[len(risks) // 2]
    page.fill("#f-min", str(limit))
    want_n = rows.filter(pl.col("amount_at_risk") >= limit).height
    page.wait_for_function(f"() => document.getElementById('shown').textContent === '{want_n:,}'")
    assert all(Decimal(r[5]) >= limit for r in visible(page))
    reset(page)


def test_sorting_by_amount_and_by_supplier(page: Page, report: tuple[Path, pl.DataFrame]) -> None:
    _, rows = report
    reset(page)
    amounts = [Decimal(r[5]) for r in visible(page)]
    assert amounts == sorted(amounts, reverse=True)  # as written: largest first
    heading = page.locator("#exc thead th", has_text="Amount at risk")
    assert heading.get_attribute("aria-sort") == "descending"
    heading.locator("button").click()
    assert heading.get_attribute("aria-sort") == "ascending"
    amounts = [Decimal(r[5]) for r in visible(page)]
    assert amounts == sorted(amounts)
    assert len(amounts) == rows.height
    page.locator("#f-text").scroll_into_view_if_needed()
    page.evaluate(SCROLL_TO_FILTERS)
    page.screenshot(path=str(ARTIFACTS / "report-sorted-by-amount.png"))
    heading.locator("button").click()
    amounts = [Decimal(r[5]) for r in visible(page)]
    assert amounts == sorted(amounts, reverse=True)
    # A text column sorts ascending first; the filter keeps working on the sorted rows.
    page.locator("#exc thead th", has_text="Supplier").locator("button").click()
    suppliers = [r[1] for r in visible(page)]
    assert suppliers == sorted(suppliers, key=str.lower)
    page.select_option("#f-code", rows["code"][0])
    assert len(visible(page)) == rows.filter(pl.col("code") == rows["code"][0]).height
    reset(page)
    # Every row on one tall screenshot, sorted by amount (the table's own scroll box lifted).
    heading.locator("button").click()
    page.evaluate("() => { document.getElementById('exc-wrap').style.maxHeight = 'none'; }")
    page.screenshot(path=str(ARTIFACTS / "report-all-rows.png"), full_page=True)
