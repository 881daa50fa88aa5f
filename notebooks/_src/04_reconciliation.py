"""04 reconciliation investigation: one supplier's invoices exceed its POs."""

from _build import code, md

CELLS = [
    md(
        """
        # Reconciliation investigation: invoices exceed the POs

        **The question.** Accounts payable flags that this month's invoices from one supplier
        add up to more than the purchase orders they reference. Before anything is paid, the
        controller wants to know: which supplier, why, how much money is at risk, and the list
        of exceptions to send back to the supplier.

        We start from the summary of the three-way match (PO ↔ shipment/receipt ↔ invoice)
        and work down to individual lines. The data is a seeded synthetic month (October's
        purchase orders and what followed) from `scfeeds.synth`, which also keeps the answer
        key of every discrepancy it injected: at the end we check our findings against it.
        """
    ),
    code(
        """
        import datetime as dt
        import tempfile
        from pathlib import Path

        import polars as pl

        import scfeeds
        from scfeeds import synth

        pl.Config.set_tbl_rows(20)
        pl.Config.set_fmt_str_lengths(40)
        pl.Config.set_tbl_width_chars(150)

        tmp = tempfile.TemporaryDirectory(prefix="scfeeds-nb-")
        root = Path(tmp.name)
        world = root / "world"
        october = synth.SynthConfig(start_date=dt.date(2026, 10, 1), days=31)
        summary = synth.generate(world, seed=25, pos=150, suppliers=4, config=october)
        dict(summary.counts)
        """
    ),
    md(
        """
        ## Load the month into the lake

        Every feed file of the month (X12, CSV and Excel exports, cXML) goes through the same
        pipeline as in production: parse, validate, commit to a Delta Lake. Local files are
        parsed in place; the catalog says what each file holds.
        """
    ),
    code(
        """
        catalog = pl.read_parquet(world / "catalog.parquet")
        sources = catalog.select(
            pl.concat_str(pl.lit(f"{world}/"), "path").alias("url"),
            "format",
            "table",
            "supplier_id",
        )
        lake = root / "lake"
        report = await scfeeds.ingest(sources, lake)
        print(f"{report.committed} files committed, {report.quarantined} rows quarantined, "
              f"{report.n_errors} parse errors")
        pl.DataFrame({"table": list(report.rows), "rows": list(report.rows.values())}).sort("table")
        """
    ),
    md(
        """
        ## Run the match

        `reconcile` takes the canonical tables as LazyFrames; receipts decide what was
        received, and the item master's pack sizes (`CS` = 24 `EA` for some items) let it
        compare quantities in different units. Default tolerances: quantities exact, price 1 %.
        """
    ),
    code(
        """
        tables = ("po_lines", "asn_lines", "invoice_lines", "receipts")
        # pin the lake's table versions: this report reads exactly these, even if an ingest
        # runs meanwhile, and `scan_lake(..., snapshot=pinned)` reproduces it later
        pinned = scfeeds.lake_snapshot(lake)
        po, asn, invoices, receipts = (scfeeds.scan_lake(lake, t, snapshot=pinned) for t in tables)
        pack_sizes = pl.read_parquet(world / "world" / "conversions.parquet")
        rec = scfeeds.reconcile(po, asn, invoices, receipts=receipts, conversions=pack_sizes)
        rec = rec.collect()  # run the match once; every view below reads the result
        """
    ),
    md(
        """
        ## Which supplier?

        First the claim itself: what each supplier billed this month (every invoice document,
        duplicates included, since that is what AP received) against the value of the PO lines.
        """
    ),
    code(
        """
        po_value = po.group_by("supplier_id").agg(
            po_value=(pl.col("qty_ordered") * pl.col("unit_price")).sum()
        )
        billed = rec.invoices.group_by("supplier_id").agg(
            invoices=pl.len(), billed=pl.col("total_amount").sum()
        )
        exposure = (
            po_value.join(billed, on="supplier_id")
            .with_columns(billed_over_po=pl.col("billed") - pl.col("po_value"))
            .with_columns(
                over_pct=(pl.col("billed_over_po") / pl.col("po_value") * 100)
                .cast(pl.Float64)
                .round(1)
            )
            .sort("supplier_id")
            .collect()
        )
        exposure
        """
    ),
    code(
        """
        worst = exposure.sort("billed_over_po", descending=True).row(0, named=True)
        supplier = worst["supplier_id"]
        print(f"{supplier} billed {worst['billed_over_po']:,} more than its POs are worth")
        """
    ),
    md(
        """
        Month-end totals are a weak signal on their own: goods in transit, invoices still to
        come and credit memos move every supplier a percent or two either way, and one
        supplier's excess can hide another's shortfall. The supplier that bills the most
        above its POs is where AP's question points; the match summary gives the picture by
        supplier (line and invoice exceptions with the amount at risk, each line counted
        once), and then by exception code for our supplier:
        """
    ),
    code(
        """
        overview = rec.summary()
        overview.by_supplier
        """
    ),
    code(
        """
        rec.exceptions.filter(pl.col("supplier_id") == supplier).group_by("code", "level").agg(
            count=pl.len(), amount_at_risk=pl.col("amount_at_risk").sum()
        ).sort("amount_at_risk", descending=True).collect()
        """
    ),
    md(
        """
        Four codes make an invoice total exceed the PO: lines billed for more than was
        received (`OVER_INVOICED`) or even ordered (`OVER_ORDERED`), prices above the PO
        (`PRICE_VARIANCE`) and the same invoice billed twice (`DUPLICATE_INVOICE`). One more
        needs attention although it does not exceed the PO: goods billed but never received
        (`INVOICED_NOT_RECEIVED`, the same lines as `NOT_SHIPPED`). Let's go down to the lines,
        starting with the three patterns AP asked about.

        ### 1. Short shipments billed in full

        A line that was received short (`SHORT_SHIPPED`) *and* billed above what was received
        (`OVER_INVOICED`): the supplier shipped part of the order and invoiced all of it.
        """
    ),
    code(
        """
        lines = rec.lines.filter(pl.col("supplier_id") == supplier)
        short_billed_full = lines.filter(
            pl.col("flags").list.contains("SHORT_SHIPPED")
            & pl.col("flags").list.contains("OVER_INVOICED")
        )
        short_billed_full.select(
            "po_number", "line_number", "item_id", "uom", "qty_ordered", "qty_received",
            "qty_invoiced", "unit_price", "bill_variance", "amount_at_risk",
        ).sort("po_number", "line_number").collect()
        """
    ),
    md(
        """
        `bill_variance` is invoiced minus received, in the PO's unit; at the PO price that is
        the amount at risk: money billed for goods the warehouse never booked in.

        ### 2. A price change that is not on the PO
        """
    ),
    code(
        """
        price_changes = lines.filter(pl.col("flags").list.contains("PRICE_VARIANCE"))
        price_changes.select(
            "po_number", "line_number", "item_id", "qty_invoiced", "unit_price",
            "invoice_unit_price",
            ((pl.col("invoice_unit_price") / pl.col("unit_price") - 1) * 100)
            .cast(pl.Float64).round(1).alias("price_change_pct"),
            "price_variance",
        ).sort("po_number", "line_number").collect()
        """
    ),
    code(
        """
        # Which invoice carries it (the exception rows keep the document and position).
        rec.exceptions.filter(
            (pl.col("supplier_id") == supplier) & (pl.col("code") == "PRICE_VARIANCE")
        ).select(
            "po_number", "line_number", "invoice_number",
            pl.col("source").str.extract(r"(feeds/.+)$"), "position",
        ).sort("po_number", "line_number", "invoice_number").collect()
        """
    ),
    md(
        """
        ### 3. A duplicate invoice under a re-keyed number

        The same invoice arrived twice, the second time with its number typed differently
        (lower case, no dash, no leading zeros). Invoice numbers are compared after
        normalising them, so the copy is caught, and its lines are kept out of every sum.
        """
    ),
    code(
        """
        rec.invoices.filter(
            (pl.col("supplier_id") == supplier) & (pl.col("status") == "DUPLICATE_INVOICE")
        ).select(
            "invoice_number", "duplicate_of", "invoice_number_normalized", "invoice_date",
            "po_number", "n_lines", "total_amount",
        ).sort("invoice_number").collect()
        """
    ),
    code(
        """
        # The original and the copy side by side.
        duplicates = rec.invoices.filter(
            (pl.col("supplier_id") == supplier) & (pl.col("status") == "DUPLICATE_INVOICE")
        )
        originals = duplicates.select(pl.col("duplicate_of").alias("invoice_number"))
        pl.concat([originals, duplicates.select("invoice_number")]).join(
            rec.invoices.filter(pl.col("supplier_id") == supplier), on="invoice_number"
        ).select(
            "invoice_number", "invoice_date", "total_amount", "status",
            pl.col("source").str.extract(r"([^/]+)$").alias("file"),
        ).sort("invoice_date", "status", "invoice_number").collect()
        """
    ),
    md(
        """
        ## Amount at risk

        What each finding puts at risk, in the supplier's invoice currency: the quantity billed
        above what was received (at the PO price), the price difference, the whole duplicate,
        and what was billed for goods never received.
        """
    ),
    code(
        """
        def risk(codes: list[str], level: str) -> pl.Expr:
            return (
                pl.when(pl.col("code").is_in(codes) & (pl.col("level") == level))
                .then(pl.col("amount_at_risk"))
                .otherwise(0)
            )


        supplier_exceptions = rec.exceptions.filter(pl.col("supplier_id") == supplier)
        at_risk = supplier_exceptions.select(
            short_shipments_billed_in_full=short_billed_full.select(
                pl.col("amount_at_risk").sum()
            ).collect().item(),
            billed_above_order=risk(["OVER_ORDERED"], "line").sum(),
            price_changes=risk(["PRICE_VARIANCE"], "line").sum(),
            duplicate_invoices=risk(["DUPLICATE_INVOICE"], "invoice").sum(),
            billed_not_received=risk(["INVOICED_NOT_RECEIVED"], "line").sum(),
        ).collect()
        at_risk.with_columns(total=pl.sum_horizontal(pl.all()))
        """
    ),
    md(
        """
        The first four columns are what the supplier billed above its POs; they add up to a
        little more than the excess found at the start, because a few lines were billed
        *below* their PO (a short shipment invoiced as shipped, a line not invoiced yet) and
        offset it. Billed-not-received does not exceed the PO but must not be paid before the
        goods arrive.

        ## The exception list to send back

        Everything the supplier has to answer for, one row per exception, with the document
        and position so their AR team can find it. Supply problems (lines not shipped yet)
        stay in, since the supplier must confirm them too.
        """
    ),
    code(
        """
        to_send = (
            supplier_exceptions.select(
                "code", "po_number", "line_number", "item_id", "invoice_number", "shipment_id",
                pl.col("source").str.extract(r"([^/]+)$").alias("document"), "position",
                "variance_qty", "variance_amount", "amount_at_risk",
            )
            .sort("code", "po_number", "line_number", "invoice_number", nulls_last=True)
            .collect()
        )
        out = root / f"exceptions_{supplier}_2026-10.csv"
        to_send.write_csv(out)
        print(f"{to_send.height} exceptions written to {out.name}")
        to_send.head(8)
        """
    ),
    md(
        """
        Before it goes out, any row can be opened: the explorer filters the exceptions by
        supplier, code and amount at risk, and a selected row shows its PO line, the ASN,
        receipt and invoice lines of that line, and the raw document behind it (the X12
        segments around the line, the cXML element at its XPath, or the export row). Here
        our supplier's largest exception is open; click any other row in the list.
        """
    ),
    code(
        """
        from scfeeds.notebook import ExceptionsExplorer

        explorer = ExceptionsExplorer(rec, po=po, asn=asn, invoices=invoices, receipts=receipts)
        explorer.supplier.value = supplier
        opened = explorer.select(0)  # the largest amount at risk
        print(f"{len(explorer.rows)} exceptions for {supplier}; open: {opened.row['code']} on "
              f"PO {opened.row['po_number']} line {opened.row['line_number']}, "
              f"{len(opened.lines['invoices'])} invoice line(s)")
        explorer
        """
    ),
    md(
        """
        ## Check against the answer key

        `synth.load_truth` lists every fault injected into this world with the exception codes
        a correct matcher must report for it. Comparing at the level of (code, PO, line) for
        line faults and (code, invoice) for invoice faults: everything injected was found, and
        nothing was reported that was not injected.
        """
    ),
    code(
        """
        def keyed(frame: pl.DataFrame) -> pl.DataFrame:
            # One key per finding: "PO/line" for line-level codes, the invoice number otherwise.
            return frame.select(
                "code",
                pl.when(pl.col("level") == "line")
                .then(pl.concat_str("po_number", pl.lit("/"), "line_number"))
                .otherwise(pl.col("invoice_number"))
                .alias("key"),
            ).unique()


        # a fault a correct match reports nothing for (a credit memo that nets out) has no code
        truth = synth.load_truth(world).filter(
            (pl.col("supplier_id") == supplier) & pl.col("code").is_not_null()
        )
        expected = keyed(truth).with_columns(injected=pl.lit(True))
        found = keyed(rec.exceptions.filter(pl.col("supplier_id") == supplier).collect())
        comparison = expected.join(
            found.with_columns(reported=pl.lit(True)), on=["code", "key"], how="full",
            coalesce=True,
        ).with_columns(pl.col("injected", "reported").fill_null(False))
        comparison.group_by("code").agg(
            injected=pl.col("injected").sum(),
            reported=pl.col("reported").sum(),
            both=(pl.col("injected") & pl.col("reported")).sum(),
        ).sort("code")
        """
    ),
    code(
        """
        missed = comparison.filter(pl.col("injected") & ~pl.col("reported"))
        unexpected = comparison.filter(~pl.col("injected") & pl.col("reported"))
        print(
            f"{comparison.height} findings: {missed.height} injected but not reported, "
            f"{unexpected.height} reported but not injected"
        )
        """
    ),
    md(
        """
        ## What to do

        - Hold payment of the duplicate invoices, of the over-billed lines and of the lines
          billed but not received; pay the rest.
        - Send the CSV above to the supplier's AR team with a request for credit notes: the
          short shipment billed in full (or ship the balance), the quantities billed beyond
          the order, the price difference (or the PO change that authorises it), and the
          cancellation of the duplicates.
        - Ask purchasing whether the new price was agreed: if yes, amend the PO and the
          variance disappears at the next match.
        """
    ),
    code(
        """
        tmp.cleanup()
        """
    ),
]
