"""05 EDI troubleshooting: a batch with broken envelopes, what the errors say, the 997."""

from _build import code, md

CELLS = [
    md(
        """
        # EDI troubleshooting: a batch with a broken envelope

        **The question.** This morning's EDI batch from `SUP002` did not go through cleanly:
        the translator logged "rejected" and the ship notices are missing from today's
        receiving plan. The supplier's EDI desk asks what exactly was wrong, and expects a
        997 functional acknowledgment back. We need to answer three things:

        1. What do the errors say, and where in which file?
        2. What did we still receive? (A bad set must not cost us the good ones.)
        3. What do we send back?

        The batch holds three 856 ship-notice files that `scfeeds.synth` damaged on purpose
        (a wrong segment count, a wrong group control number, a transmission cut short), with
        the answer key of what a correct reader must report, and one 810 invoice file typed
        by hand below.
        """
    ),
    code(
        """
        import datetime as dt
        import shutil
        import tempfile
        from pathlib import Path

        import polars as pl

        import scfeeds
        from scfeeds import synth

        pl.Config.set_fmt_str_lengths(70)
        pl.Config.set_tbl_width_chars(140)

        tmp = tempfile.TemporaryDirectory(prefix="scfeeds-nb-")
        root = Path(tmp.name)
        world = root / "world"
        synth.generate(
            world,
            seed=11,
            pos=40,
            suppliers=2,
            formats=("x12",),
            damaged=("x12_bad_se_count", "x12_bad_ge_control", "x12_truncated"),
        )
        answer_key = synth.load_damaged(world)
        answer_key.select("path", "table", "rule", "position", "good_records")
        """
    ),
    md(
        """
        The hand-made file: two 810 invoices in one interchange. Someone keyed the quantity of
        the second line of the first invoice as `1O` (a letter O, not a zero). Segments end
        with `~`, elements are separated by `*`; the ISA header fixes both.
        """
    ),
    code(
        """
        invoice_810 = "\\n".join(
            [
                "ISA*00*          *00*          *ZZ*SUP002         *ZZ*SCFEEDSBUYER   "
                "*261127*0815*U*00401*000000417*0*P*>~",
                "GS*IN*SUP002*SCFEEDSBUYER*20261127*0815*417*X*004010~",
                "ST*810*0001~",
                "BIG*20261127*INV-000417Q**4500000012~",
                "N1*SE*Supplier Two*92*SUP002~",
                "IT1*1*10*EA*12.50**BP*P02-00017*VP*V-17~",
                "IT1*2*1O*EA*3.20**BP*P02-00044*VP*V-44~",
                "TDS*15700~",
                "CTT*2~",
                "SE*8*0001~",
                "ST*810*0002~",
                "BIG*20261127*INV-000418R**4500000013~",
                "N1*SE*Supplier Two*92*SUP002~",
                "IT1*1*4*EA*7.25**BP*P02-00021*VP*V-21~",
                "TDS*2900~",
                "CTT*1~",
                "SE*7*0002~",
                "GE*2*417~",
                "IEA*1*000000417~",
            ]
        )
        inbox = root / "inbox"
        inbox.mkdir()
        for path in answer_key["path"]:
            shutil.copy(world / path, inbox / Path(path).name)
        (inbox / "SUP002_810_manual.x12").write_text(invoice_810 + "\\n")
        sorted(p.name for p in inbox.iterdir())
        """
    ),
    md(
        """
        ## 1. What the errors say

        `read_x12` accepts a glob and never raises on damaged input: every problem is a row
        of `errors`, naming the file, the interchange / group / set and their control numbers,
        the segment position (`segment N`, counted from the file's first segment), the segment
        and element at fault, a rule code and a message with the values. `level` says what
        the problem rejects: a `set` error rejects that transaction set, a `group` error is
        reported but the intact sets of the group are delivered, an `interchange` error such
        as a truncation rejects only the set that was open when the bytes ran out.
        """
    ),
    code(
        """
        batch = scfeeds.read_x12(str(inbox / "*.x12"))
        file_name = pl.col("source").str.extract(r"([^/]+)$").alias("file")
        batch.errors.select(
            file_name, "set_control", "position", "segment_id", "element", "code", "level",
            "message",
        ).sort("file")
        """
    ),
    md(
        """
        Reading the rows:

        - **`SE01_COUNT`**: the trailer of set `0001` declares one segment more than the set
          holds. Either a segment was dropped on the way, or the supplier's mapper counts
          wrongly; we cannot tell which, so the whole set is rejected.
        - **`GE02_CONTROL`**: the group trailer's control number (`GE02`) does not repeat the
          header's (`GS06`). That is an envelope slip: every set inside checked out, so the
          group is *accepted with errors* and its sets are delivered.
        - **`TRUNCATED`**: the file ends in the middle of segment 29, inside set `0002`. The
          set that was complete before the cut is delivered; the open one is not.
        - **`BAD_NUMBER`**: in the hand-made invoice, `IT102` (quantity invoiced) is `1O`.
          Invoice `INV-000417Q` is rejected; `INV-000418R` in the same group is fine.

        Here is the segment the first error points at, straight from `segments` (every
        segment in long form, with its position):
        """
    ),
    code(
        """
        def around(result, file: str, segment: int, width: int = 2) -> pl.DataFrame:
            # The segments of `file` from `segment - width` to `segment + width`.
            return result.segments.filter(
                pl.col("source").str.ends_with(file),
                pl.col("segment").is_between(segment - width, segment + width),
            ).select("segment", "segment_id", pl.col("elements").list.join("*"))


        around(batch, "SUP002_810_manual.x12", 7)
        """
    ),
    md(
        """
        ## 2. What was still delivered

        `envelopes` has one row per transaction set with its verdict. Counting the sets and
        the canonical rows that made it through, per file:
        """
    ),
    code(
        """
        batch.envelopes.group_by(file_name).agg(
            sets=pl.len(),
            rejected=(~pl.col("valid")).sum(),
            group_errors=(~pl.col("group_valid")).sum(),
        ).sort("file")
        """
    ),
    code(
        """
        delivered = (
            pl.concat(
                [
                    batch.asn_lines.select("source", pl.lit("asn_lines").alias("table")),
                    batch.invoice_lines.select("source", pl.lit("invoice_lines").alias("table")),
                ]
            )
            .group_by(file_name, "table")
            .agg(rows=pl.len())
            .sort("file")
        )
        delivered
        """
    ),
    md(
        """
        The answer key written by `synth` says how many rows a correct reader still delivers
        from each damaged file. They agree:
        """
    ),
    code(
        """
        check = answer_key.select(
            pl.col("path").str.extract(r"([^/]+)$").alias("file"), "rule", "good_records"
        ).join(delivered.select("file", "rows"), on="file", how="left")
        assert check["rows"].to_list() == check["good_records"].to_list(), check
        check
        """
    ),
    md(
        """
        And the rows themselves are ordinary canonical rows with their provenance: for
        example the surviving invoice of the hand-made file.
        """
    ),
    code(
        """
        batch.invoice_lines.select(
            "invoice_number", "po_number", "line_number", "item_id", "qty_invoiced", "unit_price",
            "line_amount", "set_control", "position",
        )
        """
    ),
    md(
        """
        ## 3. The 997 to send back

        A 997 acknowledges every functional group received: `AK1` names the group, one `AK2`
        per transaction set with its verdict in `AK5` (`A` accepted, `R` rejected, with the
        reason code), `AK3` / `AK4` point at the segment and element in error, and `AK9`
        gives the group verdict (`A`, `E` accepted with errors, `P` partially accepted,
        `R`) with counts. It goes back to the sender, so the interchange's sender and
        receiver are swapped. One 997 per file (interchange) here; `now=` pins the timestamp
        so this notebook is reproducible (leave it out in production).
        """
    ),
    code(
        """
        stamp = dt.datetime(2026, 11, 27, 9, 30)
        acks = {}
        for number, path in enumerate(sorted(inbox.glob("*.x12")), start=1):
            result = scfeeds.read_x12(path)
            acks[path.name] = result.acknowledgment(control_number=number, now=stamp)

        print(acks["SUP002_810_manual.x12"].replace("~", "~\\n"))
        """
    ),
    md(
        """
        `AK3*IT1*5**8`: the fifth segment of the set, an `IT1`, has a data element error
        (`8`); `AK4*2**6`: its second element holds an invalid character (`6`);
        `AK5*R*5`: set `0001` rejected, "one or more segments in error"; set `0002`
        accepted; `AK9*P*2*2*1`: two sets in the group, two received, one accepted.

        The verdicts of the whole batch, one row per file (each file is one interchange
        with one group):
        """
    ),
    code(
        """
        # The 997 is a string (the text to send) whose .groups and .sets hold its verdicts.
        pl.concat(
            [ack.groups.select(pl.lit(name).alias("file"), pl.all()) for name, ack in acks.items()]
        ).select(
            "file", "verdict", "sets_received", "sets_accepted", "reasons", "rejected_sets"
        )
        """
    ),
    md(
        """
        And per set of one file, with the segment and element errors in words:
        """
    ),
    code(
        """
        acks["SUP002_810_manual.x12"].sets.select("set_control", "verdict", "reasons", "errors")
        """
    ),
    md(
        """
        ## What to do

        - Send each 997 to `SUP002`'s EDI desk (through the same VAN/AS2 channel the batch
          came from). Rejected sets (`AK5*R`) must be re-sent; accepted-with-errors groups
          (`AK9*E`) need no re-send, but the supplier should fix its group control numbering.
        - Ask for the truncated file to be re-transmitted in full: its second set never
          arrived.
        - Ingest what was delivered now (`scfeeds.ingest` does this, and keeps the errors
          in the lake next to the rows, see notebook 01), so receiving and the three-way match
          are not held up by one bad set.
        """
    ),
    code(
        """
        tmp.cleanup()
        """
    ),
]
