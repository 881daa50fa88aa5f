"""03 memory: in-memory buffering vs streaming, measured with memray."""

# The code cells are checked by ruff in the notebook, where they are 8 columns narrower
# than in these indented strings (E501 applies there).
# ruff: noqa: E501

from _build import code, md

CELLS = [
    md(
        """
        # Memory: in-memory buffering vs streaming, under memray

        **The question.** The first downloader (the "seed" script this project started from)
        read every response with `await resp.read()` and kept the bodies in a list until the
        end. It worked on a test feed and died with `MemoryError` on a large supplier's
        quarterly export. Does `scfeeds.fetch` fix that, and by how much? We measure the heap
        with [memray](https://bloomberg.github.io/memray/) rather than argue.

        `scfeeds.notebook.compare_buffering` runs the same download twice under
        `memray.Tracker`: buffered in memory the seed's way, then streamed to disk by
        `scfeeds.fetch` (64 KiB pieces written to a temporary file, hashed on the way, renamed
        into place). memray traces the whole process, so the portal runs in a separate process
        here (`serve_in_process`): its own buffers must not count against the client.

        Heap peaks vary by a few percent between runs, so the cells showing raw numbers are
        excluded from nbval's output comparison; the conclusions are checked in the cells
        after them.
        """
    ),
    code(
        """
        import tempfile
        from pathlib import Path

        import polars as pl

        import scfeeds
        from scfeeds import synth
        from scfeeds.notebook import MemoryProfiler, compare_buffering

        MiB = 2**20
        tmp = tempfile.TemporaryDirectory(prefix="scfeeds-nb-")
        root = Path(tmp.name)
        (root / "portal").mkdir()
        # /v1/blob/{n} serves n deterministic pseudo-random bytes: large bodies, nothing on disk.
        portal = scfeeds.portal.serve_in_process(root / "portal")


        # Capture files go to the temporary folder too (they are removed with it).
        profiler = MemoryProfiler(directory=root / "memray")


        def blobs(count: int, size: int) -> list[str]:
            return [f"{portal.url}/v1/blob/{size}?seed={i}" for i in range(count)]


        # Warm up both code paths once, so one-time costs (imports, connection pools, caches)
        # are not counted in the first measurement.
        warm_up = await compare_buffering(blobs(2, MiB), max_at_once=2, profiler=profiler)
        print("ready")
        """
    ),
    md(
        """
        ## 64 MiB, eight requests at a time
        """
    ),
    code(
        """
        comparison = await compare_buffering(blobs(16, 4 * MiB), max_at_once=8, profiler=profiler)
        comparison
        """,
        ignore_output=True,
    ),
    code(
        """
        comparison.frame().with_columns(
            (pl.col("peak_heap_bytes") / MiB).round(1).alias("peak_heap_MiB")
        ).drop("peak_heap_bytes")
        """,
        ignore_output=True,
    ),
    code(
        """
        fetched = comparison.bytes
        print(f"fetched {fetched / MiB:.0f} MiB both ways")
        print("buffering holds the whole feed on the heap:", comparison.buffered.peak_bytes >= fetched)
        print("streaming peak below 16 MiB:", comparison.streamed.peak_bytes < 16 * MiB)
        print("streaming needs at least 4x less heap:", comparison.ratio >= 4)
        """
    ),
    md(
        """
        The buffered run's peak is the feed itself plus overhead: every body sits in the list
        until the last one arrives. The streamed run's peak is a few pieces per request in
        flight: the heap-over-time curve stays flat while the bytes go to disk. The table of
        allocation sites (under "top allocation sites") names the lines responsible:
        aiohttp's `read()` buffers in the first case, the socket reads and file writes of
        the fetch engine in the second.

        ## Does it grow with the feed?

        The claim that matters for production: memory is bounded by the configuration
        (`max_at_once` x piece size), not by the size of the feed. Same concurrency, the feed
        doubled twice:
        """
    ),
    code(
        """
        sizes = {}
        for total_mib in (32, 64, 128):
            pages = blobs(total_mib // 4, 4 * MiB)
            result = await compare_buffering(pages, max_at_once=8, profiler=profiler)
            sizes[total_mib] = result
        growth = pl.DataFrame(
            [
                {
                    "feed_MiB": total,
                    "buffered_peak_MiB": round(r.buffered.peak_bytes / MiB, 1),
                    "streamed_peak_MiB": round(r.streamed.peak_bytes / MiB, 1),
                    "ratio": round(r.ratio, 1),
                }
                for total, r in sizes.items()
            ]
        )
        growth
        """,
        ignore_output=True,
    ),
    code(
        """
        buffered = [r.buffered.peak_bytes for r in sizes.values()]
        streamed = [r.streamed.peak_bytes for r in sizes.values()]
        print("buffered peak grows with the feed (x4 feed -> > x3 peak):", buffered[2] > 3 * buffered[0])
        # a few MiB either way is allocator noise: compare growth with the feed's 96 MiB
        print("streamed peak stays flat (x4 feed -> < 8 MiB more):", streamed[2] - streamed[0] < 8 * MiB)
        print("streamed peak under 16 MiB at every size:", max(streamed) < 16 * MiB)
        """
    ),
    md(
        """
        ## Profiling your own code: `MemoryProfiler`

        The same tool works on anything: `profiler.run(fn, ...)` for a function,
        `await profiler.arun(coro)` for a coroutine. It shows the peak heap, the heap over time
        and the top allocation sites at the high-water mark, each with the line of *your* code
        that led there, all drawn offline from memray's capture file. The headline peak is
        memray's exact high-water mark, drawn in the chart as a flat line; the curve beside it
        samples the heap every 10 ms, so a buffer allocated and freed between two samples is
        in the peak but not in the curve (the headline says how high the curve got)
        (`profile.flamegraph()` writes memray's own flame graph, which needs internet to
        render).

        A parsing question: `read_x12` keeps every segment in long form by default
        (`X12Result.segments`, handy for troubleshooting, see notebook 05). What does that cost
        on a batch of 850 purchase orders, and what do we save with `segments=False` when only
        the tables matter? A month of one supplier's X12 (850s, 856s and 810s):
        """
    ),
    code(
        """
        synth.generate(root / "world", seed=5, pos=3000, suppliers=1, formats=("x12",), faults="none")
        x12_files = sorted((root / "world" / "feeds").glob("*/*/*.x12"))
        print(f"{len(x12_files)} files, {sum(p.stat().st_size for p in x12_files) / MiB:.1f} MiB")

        # native_traces=True: allocations made on polars' own threads (no Python frame) are
        # named by the native function that asked for them instead of `<unknown>`
        native = MemoryProfiler(directory=root / "memray-native", native_traces=True)
        with_segments = native.run(scfeeds.read_x12, x12_files, label="read_x12, segments kept")
        tables_only = native.run(
            scfeeds.read_x12, x12_files, segments=False, label="read_x12(segments=False)"
        )
        with_segments
        """,
        ignore_output=True,
    ),
    code(
        """
        tables_only
        """,
        ignore_output=True,
    ),
    code(
        """
        same_rows = all(
            getattr(with_segments.result, t).height == getattr(tables_only.result, t).height
            for t in ("po_lines", "asn_lines", "invoice_lines")
        )
        print("same rows in every table either way:", same_rows)
        print("segments=False needs less heap:", tables_only.peak_bytes < with_segments.peak_bytes)
        """
    ),
    md(
        """
        Both runs deliver the same tables; dropping the long-form segments saves their share
        of the heap (here more than half of it). Memory allocated on polars' own threads has
        no Python line to blame; with `native_traces=True` the sites table names the polars
        function that asked for it (file `<native>`) instead of `<unknown>`. The reader's read
        buffer is sized by `slice_bytes` (16 MiB by default): the reader's memory follows the
        slice size, not the file size.

        ## What to do

        - Fetch with `scfeeds.fetch` / `scfeeds.ingest`: the heap stays at a few MiB per
          request in flight whatever the feed size, so `max_at_once` is the memory knob (and
          the bounded queue between fetching and parsing keeps a slow parser from piling up
          landed files).
        - Read X12 with `segments=False` in pipelines; keep the default when investigating.
        - Before trusting a new step with a large feed, wrap it in `MemoryProfiler` and look
          at the peak and the top site: it takes one line.
        """
    ),
    code(
        """
        portal.close()
        tmp.cleanup()
        """
    ),
]
