"""06 supplier performance: a supplier that slips (when it started, which items, what it costs)."""

from _build import code, md

CELLS = [
    md(
        """
        # Supplier performance: a supplier that slips

        **The question.** Planning complains that one supplier "has been late a lot lately".
        Before the quarterly review with that supplier, the buyer wants facts: who is it, since
        when, on which items, whether the supplier warned us in its order acknowledgments
        (855), and what the delays cost.

        We measure **OTIF** (on time, in full) per PO line against the date we *requested* on
        the PO (850 `DTM*002`) and the date the supplier *promised* on its 855, then aggregate
        it into a scorecard per supplier with a weekly trend. The data is six months of a
        seeded synthetic world from `scfeeds.synth` with supplier performance switched on; it
        keeps the answer key, so at the end we check our numbers against it.
        """
    ),
    code(
        """
        import datetime as dt
        import tempfile
        from pathlib import Path

        import polars as pl
        from IPython.display import HTML

        import scfeeds
        from scfeeds import synth
        from scfeeds.notebook import line_chart

        pl.Config.set_tbl_rows(12)
        pl.Config.set_fmt_str_lengths(40)
        pl.Config.set_tbl_width_chars(150)

        tmp = tempfile.TemporaryDirectory(prefix="scfeeds-nb-")
        root = Path(tmp.name)
        world = root / "world"
        config = synth.SynthConfig(start_date=dt.date(2026, 1, 5), days=180, performance=True)
        summary = synth.generate(world, seed=6, pos=700, suppliers=4, config=config)
        dict(summary.counts)
        """
    ),
    md(
        """
        ## Load the feeds

        POs, ship notices and warehouse receipts go into the lake as in production; the
        855 acknowledgments are read with `read_x12`, which checks their envelopes (and could
        answer them with a 997) like any other X12 set.
        """
    ),
    code(
        """
        catalog = pl.read_parquet(world / "catalog.parquet")
        sources = catalog.filter(pl.col("table") != "po_acks").select(
            pl.concat_str(pl.lit(f"{world}/"), "path").alias("url"), "format", "table",
            "supplier_id",
        )
        lake = root / "lake"
        report = await scfeeds.ingest(sources, lake)
        print(f"{report.committed} files committed, {report.quarantined} rows quarantined")

        ack_files = sorted(str(p) for p in world.glob("feeds/*/po_acks/*.x12"))
        x12 = scfeeds.read_x12(ack_files)
        acks = x12.po_acks
        print(f"{len(ack_files)} 855 files, {x12.envelopes.height} sets, "
              f"{int(x12.envelopes['valid'].sum())} valid, {x12.errors.height} errors")
        acks.group_by("ack_status", "ack_code").len().sort("ack_status", "ack_code")
        """
    ),
    md(
        """
        ## OTIF per line

        A line is **on time** when its first receipt is no more than 7 days before the
        target date and its last receipt no later than the target date (`window=(7, 0)`), and
        **in full** when the received quantity equals the ordered one. Receipts are the
        deliveries here (arrival at our dock); pack sizes convert `CS` to `EA` where needed.
        """
    ),
    code(
        """
        po = scfeeds.scan_lake(lake, "po_lines")
        receipts = scfeeds.scan_lake(lake, "receipts")
        pack_sizes = pl.read_parquet(world / "world" / "conversions.parquet")
        result = scfeeds.otif(
            po, receipts=receipts, acks=acks, window=(7, 0), conversions=pack_sizes
        )
        result.lines.select(
            "supplier_id", "po_number", "line_number", "requested_date", "promised_date",
            "first_delivery", "last_delivery", "timing", "in_full", "otif",
        ).head(5)
        """
    ),
    md(
        """
        ## The scorecard

        Per supplier over the whole period: the share of lines on time, in full and both,
        the fill rate (quantity received up to the quantity ordered), the mean delay of the
        late lines, and a score weighting timeliness and completeness equally.
        """
    ),
    code(
        """
        card = result.scorecard(every="week")
        card.suppliers.select(
            "supplier_id", "lines", "late_lines", "on_time_rate", "in_full_rate", "otif_rate",
            "fill_rate", "mean_days_late", "score",
        ).with_columns(pl.col(pl.Float64).round(3))
        """
    ),
    md(
        """
        One supplier trails the others on time while its completeness is as good as theirs.
        A whole-period rate hides *when* it happened; the weekly trend shows it:
        """
    ),
    code(
        """
        trend = card.trend.with_columns(
            week=((pl.col("period") - config.start_date).dt.total_days() // 7)
        )
        series = {
            s: [(float(w), 100 * r) for w, r in rows.select("week", "on_time_rate").iter_rows()]
            for (s,), rows in trend.partition_by("supplier_id", as_dict=True).items()
        }
        HTML(line_chart(
            dict(sorted(series.items())), title="On time vs requested date, by week due",
            x_label="week", y_label="% of lines", width=560, height=230,
        ))
        """
    ),
    code(
        """
        first_half = card.trend.filter(pl.col("period") < config.start_date + dt.timedelta(90))
        second_half = card.trend.filter(pl.col("period") >= config.start_date + dt.timedelta(90))

        def rate(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.group_by("supplier_id").agg(
                (pl.col("on_time_lines").sum() / pl.col("lines").sum()).alias("on_time")
            )

        change = (
            rate(first_half).join(rate(second_half), on="supplier_id", suffix="_later")
            .with_columns(drop=pl.col("on_time") - pl.col("on_time_later"))
            .sort("drop", descending=True)
        )
        supplier = change["supplier_id"][0]
        print(f"{supplier}: on time {change['on_time'][0]:.0%} in the first three months, "
              f"{change['on_time_later'][0]:.0%} since")
        """
    ),
    md(
        """
        ## When did it start?

        The first week from which the supplier's on-time rate stays below 80 % in a rolling
        four-week window (weighted by lines):
        """
    ),
    code(
        """
        weekly = (
            card.trend.filter(pl.col("supplier_id") == supplier)
            .sort("period")
            .with_columns(
                rolling=pl.col("on_time_lines").rolling_sum(4, min_samples=1)
                / pl.col("lines").rolling_sum(4, min_samples=1)
            )
        )
        good = weekly.filter(pl.col("rolling") >= 0.8)["period"].max()
        started = weekly.filter(pl.col("period") > good)["period"].min()
        print(f"{supplier} slips from the week of {started} on")
        weekly.select("period", "lines", "late_lines", "on_time_rate", "rolling").with_columns(
            pl.col(pl.Float64).round(2)
        ).filter(pl.col("period") >= started - dt.timedelta(weeks=3)).head(8)
        """
    ),
    md(
        """
        ## Which items?

        The late lines since then, by item: the slip is broad rather than one problem part,
        which points to capacity or logistics at the supplier rather than a single component.
        """
    ),
    code(
        """
        late = result.lines.filter(
            (pl.col("supplier_id") == supplier)
            & (pl.col("target_date") >= started)
            & (pl.col("timing") == "late")
        )
        by_item = (
            late.group_by("item_id")
            .agg(
                late_lines=pl.len(),
                mean_days_late=pl.col("days_late").mean().round(1),
                value=(pl.col("qty_ordered") * pl.col("unit_price")).sum(),
            )
            .sort(["late_lines", "value", "item_id"], descending=[True, True, False])
        )
        print(f"{late.height} late lines on {by_item.height} items")
        by_item.head(8)
        """
    ),
    md(
        """
        ## Did the supplier warn us?

        OTIF against the *promised* date: a line late against our request but on time against
        the 855's date was announced (`DR`, date rescheduled), which planning could have used.
        """
    ),
    code(
        """
        late.join(
            acks.select("po_number", "line_number", "ack_code"), on=["po_number", "line_number"],
            how="left",
        ).group_by(
            pl.col("on_time_promised").alias("on_time_vs_promise"), "ack_code"
        ).agg(lines=pl.len()).sort(["lines", "ack_code"], descending=[True, False])
        """
    ),
    md(
        """
        The acknowledgment leg of the match lists every line where the 855 differs from the
        PO: rejections, cut quantities, later dates, and anything shipped beyond what was
        acknowledged.
        """
    ),
    code(
        """
        asn = scfeeds.scan_lake(lake, "asn_lines")
        ack_exc = scfeeds.ack_exceptions(po, acks, asn_lines=asn)
        ack_exc.group_by("supplier_id", "code").len().sort("code", "supplier_id").pivot(
            "code", index="supplier_id", values="len"
        ).fill_null(0).sort("supplier_id")
        """
    ),
    md(
        """
        ## What it costs

        Two numbers for the review, with the assumption spelled out: the value of the goods
        that arrived late, and the value-days of the delay (value x days late). At a cost of
        capital and stock-out risk of 25 % a year, a value-day costs 0.25 / 365 of the value.
        """
    ),
    code(
        """
        rate_per_day = 0.25 / 365
        cost = late.select(
            late_lines=pl.len(),
            value_late=(pl.col("qty_ordered") * pl.col("unit_price")).sum(),
            value_days=(pl.col("qty_ordered") * pl.col("unit_price")).cast(pl.Float64)
            .mul(pl.col("days_late")).sum(),
        ).with_columns(delay_cost=(pl.col("value_days") * rate_per_day).round(2))
        cost
        """
    ),
    md(
        """
        ## Check against the answer key

        synth wrote, for every PO line, the timing, in-full and OTIF flags a correct
        implementation must find (with the same 7-day window). Our per-line results agree with
        it exactly:
        """
    ),
    code(
        """
        truth = pl.read_parquet(world / "world" / "otif_truth" / "*.parquet")
        cols = ["po_number", "line_number", "timing", "on_time_promised", "in_full", "otif"]
        ours = result.lines.select(cols).sort("po_number", "line_number")
        key = truth.select(cols).sort("po_number", "line_number")
        print("lines:", ours.height, "| identical to the answer key:", ours.equals(key))
        """
    ),
    md(
        """
        ## What to do

        - Take the weekly chart and the item list to the review: the slip started in the week
          found above and affects most of the items ordered since.
        - Ask the supplier to reschedule honestly on its 855s: lines announced late can be
          planned around; unannounced ones cannot.
        - Track the supplier's scorecard weekly until its rolling on-time rate is back above
          80 %.
        """
    ),
    code(
        """
        tmp.cleanup()
        """
    ),
]
