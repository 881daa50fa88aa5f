"""Many small CSV exports read together equal one ``read_export`` call per file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds import _exports
from scfeeds._exports import _batch
from scfeeds._parse import Job, parse_batch, parse_file


@pytest.fixture(scope="module")
def exports(
    make_world: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Path, str]]:
    """Daily exports cut from three suppliers' files (three presets, latin-1 among them):
    each keeps its supplier's header and gets two to five records."""
    world = make_world(seed=5, suppliers=3, pos=40, formats=("csv",), faults="none")
    dest = tmp_path_factory.mktemp("daily")
    out: list[tuple[Path, str]] = []
    for table in ("po_lines", "invoice_lines"):
        for big in sorted((world / "feeds").glob(f"*/{table}/*.csv")):
            lines = big.read_bytes().splitlines(keepends=True)
            header, body = lines[0], lines[1:]
            step = 2
            for i in range(0, min(len(body), 40), step):
                path = dest / f"{big.parent.parent.name}_{table}_{i:03}.csv"
                path.write_bytes(header + b"".join(body[i : i + step + i % 4]))
                out.append((path, table))
    return out


def _damage(dest: Path) -> list[tuple[Path, str]]:
    """One file per problem a single export can have."""
    files = {
        "no_po_number.csv": "Vendor ID,PO Date,Line,Item #,Qty Ordered,UOM,Unit Price\n"
        "SUP001,07/02/2026,1,P-1,4,EA,47.00\n",
        "nul.csv": "Vendor ID,PO Number,PO Date,Line,Item #,Description,Qty Ordered,UOM,"
        "Unit Price,Currency\n"
        "SUP001,4500000001,07/02/2026,1,P-1,Bolt,4,EA,47.00,USD\n"
        "SUP001,45000\x0000002,07/02/2026,1,P-2,Nut,4,EA,1.00,USD\n"
        "SUP001,4500000003,07/02/2026,1,P-3,Washer,four,EA,1.00,USD\n",
        "title_and_unknown.csv": "Export of 2026-02-07\n"
        "Vendor ID,PO Number,PO Date,Line,Item #,Qty Ordered,UOM,Unit Price,Currency,Buyer\n"
        "SUP001,4500000004,07/02/2026,1,P-4,2,EA,3.00,USD,Ann\n"
        "TOTAL,,,,,2,,,,\n",
        "multiline.csv": "Vendor ID,PO Number,PO Date,Line,Item #,Description,Qty Ordered,UOM,"
        "Unit Price,Currency\n"
        'SUP001,4500000005,07/02/2026,1,P-5,"Bolt, ""M8""\nzinc plated",4,EA,47.00,USD\n'
        "SUP001,4500000005,07/02/2026,2,P-6,Nut,1,EA,1.00,USD\n",
        "blank_line.csv": "Vendor ID,PO Number,PO Date,Line,Item #,Description,Qty Ordered,UOM,"
        "Unit Price,Currency\r\n"
        "SUP001,4500000006,07/02/2026,1,P-7,Bolt,4,EA,47.00,USD\r\n\r\n"
        'SUP001,4500000006,07/02/2026,2,P-8,"Nut, ""hex""",1,EA,"1,000.00",USD\r\n',
        "not_csv.csv": "\x89PNG\r\n\x1a\n",
        "empty.csv": "",
    }
    out = []
    for name, text in files.items():
        path = dest / name
        path.write_bytes(text.encode("utf-8"))
        out.append((path, "po_lines"))
    return out


def _one_by_one(jobs: list[Job]) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    parts: dict[str, list[pl.DataFrame]] = {}
    errors = []
    for j in jobs:
        got = parse_file(j.path, table=j.table, source=j.source)
        for t, frame in got.tables.items():
            parts.setdefault(t, []).append(frame)
        errors.append(got.errors)
    return {t: pl.concat(v) for t, v in parts.items()}, pl.concat(errors)


@pytest.mark.parametrize("named", [True, False], ids=["table_given", "table_found"])
def test_batch_equals_one_read_per_file(
    exports: list[tuple[Path, str]], tmp_path: Path, named: bool
) -> None:
    items = list(exports)
    # damaged files in the middle of the run
    damaged = _damage(tmp_path)
    items[len(items) // 2 : len(items) // 2] = damaged
    jobs = [
        Job(p, source=f"https://portal.test/{i}/{p.name}", table=t if named else None)  # type: ignore[arg-type]
        for i, (p, t) in enumerate(items)
    ]
    tables, errors = parse_batch(jobs)
    want_tables, want_errors = _one_by_one(jobs)
    assert set(tables) == {"po_lines", "invoice_lines"}
    for t, frame in tables.items():
        assert_frame_equal(frame, want_tables[t])  # provenance included
        assert frame["source"].str.starts_with("https://portal.test/").all()
    assert_frame_equal(errors, want_errors)
    rules = set(errors["rule"])
    assert {"MISSING_COLUMNS", "CONTROL_CHARACTER", "BAD_NUMBER", "TOTALS_ROW"} <= rules
    # the file after the damaged ones still gives its rows
    after = jobs[len(exports) // 2 + len(damaged)]
    want = parse_file(after.path, table=after.table, source=after.source)
    got = sum(f.filter(pl.col("source") == after.source).height for f in tables.values())
    assert got == sum(f.height for f in want.tables.values()) > 0


def test_one_plan_and_one_query_per_layout(
    exports: list[tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    plans = [0]
    real = _batch._plan_csv

    def counted(*args: Any, **kwargs: Any) -> Any:
        plans[0] += 1
        return real(*args, **kwargs)

    reads = [0]
    read_csv = pl.read_csv

    def read(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(_batch, "_plan_csv", counted)
    monkeypatch.setattr(pl, "read_csv", read)
    got = _exports.read_export_batch([(p, str(p), t) for p, t in exports])  # type: ignore[misc]
    assert got.declined == []
    layouts = {(p.name.split("_")[0], t) for p, t in exports}
    assert plans[0] == len(layouts) < len(exports)
    # one read of the joined records per header (the planning of a header reads none)
    assert reads[0] == len(layouts)
    assert sum(f.height for f in got.rows.values()) > len(exports)


def test_latin1_and_oversized_files_equal_one_read(tmp_path: Path) -> None:
    header = (
        "Lieferant;Bestellnummer;Bestelldatum;Pos;Artikelnummer;Bezeichnung;Menge;ME;Preis;"
        "Währung\n"
    )
    small = tmp_path / "small.csv"
    small.write_bytes(
        (header + "SUP002;4500000012;31.01.2026;1;P-1;Mutter groß;18;EA;41,62;EUR\n").encode(
            "latin-1"
        )
    )
    row = "SUP002;4500000013;31.01.2026;{};P-2;Schraube;1.234;EA;1,50;EUR\n"
    big = tmp_path / "big.csv"
    big.write_text(header + "".join(row.format(i) for i in range(1, 20_000)), encoding="utf-8")
    assert big.stat().st_size > 1024 * 1024
    jobs = [Job(small, table="po_lines"), Job(big, table="po_lines")]
    got = _exports.read_export_batch([(small, str(small), "po_lines"), (big, str(big), "po_lines")])
    assert got.declined == [1]
    tables, errors = parse_batch(jobs)
    want_tables, want_errors = _one_by_one(jobs)
    assert_frame_equal(tables["po_lines"], want_tables["po_lines"])
    assert_frame_equal(errors, want_errors)
    assert tables["po_lines"]["description"][0] == "Mutter groß"
