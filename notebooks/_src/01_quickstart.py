"""01 quickstart: portal -> fetch with progress -> LazyFrames -> validate -> quarantine."""

from _build import code, md

CELLS = [
    md(
        """
        # Quickstart: from a supplier portal to validated frames

        **The question.** A new supplier, `SUP001`, has been onboarded to the portal. Before we
        trust its feeds in the monthly three-way match we want to see them: fetch everything it
        published, load it as polars LazyFrames in the canonical schema, validate it, and look
        at what was put aside, and why.

        Everything here runs on your machine: a seeded synthetic world (`scfeeds.synth`) stands
        in for the suppliers, and the simulated portal (`scfeeds.portal`) serves it over HTTP
        on `127.0.0.1`. Same seed, same bytes, so the numbers below are the numbers you get.
        """
    ),
    code(
        """
        import json
        import tempfile
        import urllib.request
        from pathlib import Path

        import polars as pl

        import scfeeds
        from scfeeds import synth

        pl.Config.set_tbl_rows(12)
        pl.Config.set_fmt_str_lengths(60)

        # All data lives in a temporary folder that is removed at the end of the notebook.
        tmp = tempfile.TemporaryDirectory(prefix="scfeeds-nb-")
        root = Path(tmp.name)
        world = synth.generate(root / "world", seed=7, pos=60, suppliers=3, damaged=True)
        print(f"{world.files} feed files, {world.damaged} damaged files, rows per table:")
        dict(world.counts)
        """
    ),
    md(
        """
        ## Start the portal

        `serve_in_thread` runs the portal on its own event loop in a background thread, so the
        notebook's kernel can talk to it without deadlocking against itself. A little latency
        makes it behave like a remote server. The listing endpoint tells us what `SUP001`
        publishes: a file per table here (and an invoice export it sent twice), in three
        formats (X12 850s, CSV and Excel exports).
        """
    ),
    code(
        """
        portal = scfeeds.portal.serve_in_thread(root / "world", latency=0.005, seed=7)
        print("portal listening on", portal.url)

        with urllib.request.urlopen(f"{portal.url}/v1/feeds?supplier=SUP001") as resp:
            feeds = json.load(resp)["feeds"]
        pl.DataFrame(feeds).select("id", "table", "format", "records", "bytes")
        """
    ),
    md(
        """
        ## Fetch with progress

        `scfeeds.fetch` downloads with bounded, adaptive concurrency (`limits=8`: at most eight
        requests in flight), writes each file under a temporary name, hashes it while writing
        and renames it into place, so a landed file is complete or absent. `progress="auto"`
        shows a widget in JupyterLab (a bar in a terminal); it turns green when everything
        landed and red if anything failed. Top-level `await` works in a notebook cell; in a
        script use `scfeeds.run(scfeeds.fetch(...))`.
        """
    ),
    code(
        """
        landing = root / "landing"
        report = await scfeeds.fetch(
            [feed["url"] for feed in feeds], landing, limits=8, progress="auto"
        )
        print(f"{report.succeeded} landed, {report.failed} failed, {report.bytes:,} bytes")
        """
    ),
    md(
        """
        The report is data, not a log line: one row per item with its landing path, status,
        size and number of attempts (a retried item would show `attempts > 1`).
        """
    ),
    code(
        """
        report.items.select("path", "status", "bytes", "attempts", "http_status").sort("path")
        """
    ),
    md(
        """
        ## Load as LazyFrames

        Each format has its reader, and all of them return the same canonical schema per table
        (`scfeeds.schemas`), with provenance: `source` (the file) and `position` (segment,
        row or XPath). Supplier exports are read lazily with `scan_export`, which recognises
        the supplier's column headers and number/date dialect; X12 is read with `read_x12`,
        which also checks the envelopes (more in notebook 05).
        """
    ),
    code(
        """
        files = {path.name: path for path in (landing / "v1" / "feeds").iterdir()}
        x12_file = next(p for name, p in files.items() if name.endswith(".x12"))
        asn_file = next(p for name, p in files.items() if "asn_lines" in name)
        invoice_file = next(p for name, p in files.items() if "invoice_lines" in name)

        frames = {
            "po_lines": scfeeds.read_x12(x12_file).po_lines.lazy(),
            "asn_lines": scfeeds.scan_export(asn_file, table="asn_lines"),
            "invoice_lines": scfeeds.scan_export(invoice_file, table="invoice_lines"),
        }
        frames["invoice_lines"].select(
            "invoice_number", "po_number", "line_number", "item_id", "qty_invoiced", "uom",
            "unit_price", "line_amount", "position",
        ).head(5).collect()
        """
    ),
    md(
        """
        The exports are read only at `.collect()`: a LazyFrame is a query plan, and nothing is
        parsed until a result is asked for. (`read_x12` is eager, since it also
        returns the envelopes and errors; `.lazy()` lets its table join the others.)
        Quantities and money are exact decimals (`Decimal(18, 4)`), so price comparisons
        later never suffer from float rounding.
        """
    ),
    code(
        """
        frames["asn_lines"].collect_schema()
        """
    ),
    md(
        """
        ## Validate

        `scfeeds.validate(frame, table)` splits rows into `good` and `failures`; a failure
        keeps the original values, the first rule broken, all rules broken and a message. On
        a LazyFrame both halves stay lazy. The portal's files are clean:
        """
    ),
    code(
        """
        counts = []
        for table, frame in frames.items():
            good, failures = scfeeds.validate(frame, table)
            good_n, failed_n = pl.collect_all([good.select(pl.len()), failures.select(pl.len())])
            counts.append({"table": table, "good": good_n.item(), "quarantined": failed_n.item()})
        pl.DataFrame(counts)
        """
    ),
    md(
        """
        ## A re-sent file with problems

        Real life: `SUP001` e-mails a corrected ASN export, edited by hand in a spreadsheet.
        We make that file here from the fetched one, with three typical slips: a negative
        quantity, a unit spelled out (`EACH` is not an X12 unit code) and a row whose PO number
        was deleted.
        """
    ),
    code(
        """
        def set_value(column: str, row: int, value: str | None) -> pl.Expr:
            # Overwrite one cell of the raw export (row counts data rows from 0).
            at_row = pl.int_range(pl.len()) == row
            return pl.when(at_row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)


        raw = pl.read_csv(asn_file, infer_schema=False)
        edited = raw.with_columns(
            set_value("Qty Shipped", 2, "-4"),
            set_value("UOM", 5, "EACH"),
            set_value("PO Number", 8, None),
        )
        resent = root / "resent" / "SUP001_asn_corrected.csv"
        resent.parent.mkdir()
        edited.write_csv(resent)
        print(raw.columns)
        """
    ),
    code(
        """
        good, failures = scfeeds.validate(
            scfeeds.scan_export(resent, table="asn_lines"), "asn_lines"
        )
        print(good.select(pl.len()).collect().item(), "good rows")
        failures.select(
            "position", "po_number", "item_id", "qty_shipped", "uom", "rule", "message"
        ).collect()
        """
    ),
    md(
        """
        The three bad rows are named by file position (`row N`, the N-th data row), rule and
        a message with the offending value; the other rows are delivered. This is what we
        send back to the supplier, and nothing crashed.

        ## The same thing end to end: ingest into a lake

        `scfeeds.ingest` does all of the above in one pipeline: fetch -> parse off the event
        loop -> validate -> commit to a Delta Lake, with a bounded queue between fetching and
        parsing so memory stays flat. Sources can be URLs from the listing or local files;
        here we add the re-sent CSV and the three damaged X12 files that `synth` made (a wrong
        segment count, a wrong group control number, a file cut short).
        """
    ),
    code(
        """
        damaged = synth.load_damaged(root / "world").filter(pl.col("format") == "x12")
        sources = [*feeds, str(resent), *(str(root / "world" / p) for p in damaged["path"])]
        lake = root / "lake"
        ingested = await scfeeds.ingest(sources, lake, limits=8, progress="auto")
        print(
            f"{ingested.committed} sources committed, {ingested.quarantined} rows quarantined, "
            f"{ingested.n_errors} parse errors"
        )
        """
    ),
    md(
        """
        `scan_lake` gives each table back as a LazyFrame over its committed rows (the lake's tables
        are Delta tables: polars, DuckDB or Spark read them without scfeeds); the
        quarantine and the parse errors are in the lake too, as data.
        """
    ),
    code(
        """
        pl.DataFrame(
            [
                {
                    "table": t,
                    "rows": scfeeds.scan_lake(lake, t).select(pl.len()).collect().item(),
                    "quarantined": ingested.quarantine(t).select(pl.len()).collect().item(),
                }
                for t in ("po_lines", "asn_lines", "invoice_lines", "receipts")
            ]
        )
        """
    ),
    code(
        """
        ingested.quarantine("asn_lines").select(
            pl.col("source").str.extract(r"([^/]+)$"), "position", "rule", "message"
        ).sort("position").collect()
        """
    ),
    code(
        """
        ingested.errors().select(
            pl.col("source").str.extract(r"([^/]+)$"), "position", "rule", "message"
        ).sort("source", "position").collect()
        """
    ),
    md(
        """
        Each damaged X12 file names the segment and the envelope rule it broke, and the sets
        that were intact were still delivered: a batch is never lost to one bad file.
        Notebook 05 takes the broken envelope apart and writes the 997 to send back.

        ## Clean up

        Stop the portal and remove the temporary folder.
        """
    ),
    code(
        """
        portal.close()
        tmp.cleanup()
        """
    ),
]
