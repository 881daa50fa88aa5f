"""The supplier scorecard on paper: ``scfeeds otif`` over a lake, its HTML page and workbook."""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal
from pathlib import Path

import openpyxl
import polars as pl
import pytest

import scfeeds
from scfeeds import synth
from scfeeds._ingest import ingest
from scfeeds._otif import SCORE_COLUMNS
from scfeeds._synth.config import SynthConfig
from scfeeds.cli import main
from scfeeds.schemas import empty

D = dt.date
HOSTILE = '=HYPERLINK("http:x","y")<script>alert(1)</script>'
PLUS = "+cmd|' /C calc'!A0"


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.concat([empty(table), pl.DataFrame(rows)], how="diagonal_relaxed")  # type: ignore[arg-type]


def _otif() -> scfeeds.Otif:
    def line(sup: str, ln: str, req: dt.date) -> dict[str, object]:
        return {"supplier_id": sup, "po_number": f"P-{ln}", "line_number": ln, "item_id": "I",
                "uom": "EA", "qty_ordered": Decimal(10), "unit_price": Decimal("2.5"),
                "po_date": D(2026, 1, 1), "requested_date": req}  # fmt: skip

    def rec(ln: str, qty: int, day: dt.date) -> dict[str, object]:
        return {"po_number": f"P-{ln}", "line_number": ln, "item_id": "I", "uom": "EA",
                "qty_received": Decimal(qty), "receipt_date": day}  # fmt: skip

    po = _frame(
        "po_lines",
        [
            line(HOSTILE, "1", D(2026, 1, 10)),
            line(HOSTILE, "2", D(2026, 2, 10)),
            line(PLUS, "3", D(2026, 1, 10)),
            line("SUP-OK", "4", D(2026, 1, 12)),
        ],
    )
    receipts = _frame(
        "receipts",
        [
            rec("1", 10, D(2026, 1, 10)),  # on time, in full
            rec("2", 10, D(2026, 2, 20)),  # late
            rec("3", 4, D(2026, 1, 9)),  # on time, short
            rec("4", 10, D(2026, 1, 12)),
        ],
    )
    return scfeeds.otif(po, receipts=receipts)


def _rows(ws: openpyxl.worksheet.worksheet.Worksheet) -> list[tuple[object, ...]]:
    return [tuple(r) for r in ws.iter_rows(values_only=True)]


def test_the_page_has_every_supplier_escaped_and_no_script(tmp_path: Path) -> None:
    res = _otif()
    card = res.scorecard(every="month")
    out = res.to_html(tmp_path / "sub" / "card.html", every="month")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    # nothing runs, nothing is fetched
    assert "<script" not in text.replace("&lt;script", "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "default-src &#x27;none&#x27;" in text
    for sup in card.suppliers["supplier_id"]:
        assert f"<td>{html.escape(sup, quote=True)}</td>" in text
    assert text.count("<tr><td>") == card.suppliers.height + card.suppliers.height  # + trend
    # rates as the analyst reads them: HOSTILE is 1 OTIF line of 2
    assert "50 %" in text
    assert "2026-01-01" in text  # the trend's months
    assert "2026-02-01" in text
    assert "requested date" in text
    assert card.to_html(tmp_path / "again.html").read_text(encoding="utf-8") == text


def test_the_workbook_has_both_sheets_filtered_frozen_and_formula_safe(tmp_path: Path) -> None:
    card = _otif().scorecard(every="week")
    path = card.to_excel(tmp_path / "card.xlsx")
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Scorecard", "Trend"]
    for name, frame in (("Scorecard", card.suppliers), ("Trend", card.trend)):
        ws = wb[name]
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref or ws.tables  # a table carries its own autofilter
        for t in ws.tables.values():
            assert t.autoFilter is not None
        rows = _rows(ws)
        assert len(rows) == frame.height + 1
        assert rows[0][0] == "Supplier"
        ids = [r[0] for r in rows[1:]]
        # a supplier id that starts a formula is text with a leading quote
        assert {f"'{HOSTILE}", f"'{PLUS}", "SUP-OK"} <= set(ids)
        assert not any(isinstance(v, str) and v.startswith(("=", "+")) for r in rows for v in r)
        for cell in ws["A"][1:]:
            assert cell.data_type == "s"
    ws = wb["Scorecard"]
    head = [c.value for c in ws[1]]
    rate_col = head.index("OTIF") + 1
    assert ws.cell(2, rate_col).number_format == "0.0%"
    got = {r[0]: r[rate_col - 1] for r in _rows(ws)[1:]}
    want = dict(card.suppliers.select("supplier_id", "otif_rate").iter_rows())
    assert got[f"'{HOSTILE}"] == pytest.approx(want[HOSTILE])
    assert len(head) == len(SCORE_COLUMNS)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("otif-cli")
    world = root / "world"
    synth.generate(world, seed=9, pos=80, suppliers=3, config=SynthConfig(performance=True))
    catalog = pl.read_parquet(world / "catalog.parquet")
    sources = [
        scfeeds.Source(url=str(world / r["path"]), format=r["format"], table=r["table"])
        for r in catalog.iter_rows(named=True)
    ]
    scfeeds.run(ingest(sources, root / "lake", progress=None, pool="threads"))
    return root


def test_the_cli_prints_and_writes_the_scorecard_of_a_lake(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_path, xlsx_path = tmp_path / "card.html", tmp_path / "card.xlsx"
    argv = ["otif", "--lake", str(lake / "lake"), "--every", "week", "--window", "7,0"]
    assert main([*argv, "--html", str(html_path), "--xlsx", str(xlsx_path)]) == 0
    out = capsys.readouterr().out
    world = lake / "world"
    want = scfeeds.otif(
        synth.load_world(world, "po_lines"),
        receipts=synth.load_world(world, "receipts"),
        acks=synth.load_world(world, "po_acks"),
        window=(7, 0),
    ).scorecard(every="week")
    assert "deliveries from receipts" in out
    for sup, lines in want.suppliers.select("supplier_id", "lines").iter_rows():
        assert re.search(rf"{sup}\s+┆\s+{lines}\s", out), (sup, out)
    page = html_path.read_text(encoding="utf-8")
    for sup in want.suppliers["supplier_id"]:
        assert f"<td>{sup}</td>" in page
    wb = openpyxl.load_workbook(xlsx_path)
    assert wb["Scorecard"].max_row == want.suppliers.height + 1
    assert wb["Trend"].max_row == want.trend.height + 1
    # the promised basis measures against the 855's dates: another scorecard
    assert main(["otif", "--lake", str(lake / "lake"), "--basis", "promised"]) == 0
    assert "vs the promised date" in capsys.readouterr().out


def test_the_cli_refuses_a_missing_lake_and_a_bad_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["otif", "--lake", str(tmp_path / "nope")]) == 2
    assert "no such lake" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["otif", "--lake", str(tmp_path), "--window", "soon"])
    assert exc.value.code == 2
    assert "EARLY,LATE" in capsys.readouterr().err
