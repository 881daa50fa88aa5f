"""02 tuning: concurrency and chunk size against a rate-limited portal."""

# The code cells are checked by ruff in the notebook, where they are 8 columns narrower
# than in these indented strings (E501 applies there).
# ruff: noqa: E501

from _build import code, md

CELLS = [
    md(
        """
        # Tuning concurrency and chunk size against a rate-limited portal

        **The question.** A supplier's portal serves line items in pages
        (`?offset=&limit=`) and enforces a request-rate limit: too many requests per second
        and it answers `429 Too Many Requests` with a `Retry-After`. How many requests should
        we keep in flight (`max_at_once`), how large should each page be (`chunk_size`), and
        what do we configure for a supplier whose contract says **20 requests per second**?

        We measure instead of guessing: a sweep over a grid of (concurrency, chunk size), the
        knee of the curve, the adaptive limit (AIMD) finding the server's limit on its own,
        and a quota-respecting fetch. Timings depend on the machine, so the cells that show
        raw measurements are excluded from nbval's output comparison (tag
        `nbval-ignore-output`); the conclusions drawn from them are checked in the cells that
        follow each one.
        """
    ),
    code(
        """
        import asyncio
        import json
        import tempfile
        import urllib.request
        from pathlib import Path

        import polars as pl

        import scfeeds
        from scfeeds import synth
        from scfeeds.notebook import ConcurrencyTuner, FeedDriver, auto_progress

        tmp = tempfile.TemporaryDirectory(prefix="scfeeds-nb-")
        root = Path(tmp.name)
        synth.generate(root / "world", seed=3, pos=800, suppliers=1, formats=("csv",), faults="none")

        # 50 ms per response like a remote server; 40 requests/s per client with a burst of 4.
        portal = scfeeds.portal.serve_in_thread(
            root / "world", latency=0.05, rate_limit=40, burst=4, seed=3, access_log=False
        )
        with urllib.request.urlopen(f"{portal.url}/v1/feeds?table=asn_lines") as resp:
            feed = max(json.load(resp)["feeds"], key=lambda f: f["records"])
        print(f"feed {feed['id']}: {feed['records']:,} line items, paged at {feed['lines_url']}")
        """
    ),
    md(
        """
        ## The sweep

        `ConcurrencyTuner` drives the real fetch engine (`scfeeds.fetch`) through a
        `FeedDriver` over the feed's paged endpoint. `sweep` fetches the same number of records
        at every grid point, with a pause between points so the server's rate-limit bucket
        refills, and records throughput, latency percentiles, 429s and retries. A progress
        line shows which point is running and how many are done while the sweep goes on
        (about half a minute here). The knee is
        the best throughput among the points that were never throttled and whose latency did
        not climb (queueing shows in latency before it shows in errors); ties go to fewer
        requests in flight.
        """
    ),
    code(
        """
        tuner = ConcurrencyTuner(
            FeedDriver(feed["lines_url"], total=feed["records"]), max_limit=32, chunk_size=100
        )
        sweep = await tuner.sweep(
            concurrency=[1, 2, 4, 8, 16], chunk_sizes=[100, 400], records=4000, pause=1.0
        )
        sweep
        """,
        ignore_output=True,
    ),
    code(
        """
        sweep.results.select(
            "max_at_once", "chunk_size", "records_per_s", "p50_s", "p90_s", "throttled", "retried"
        ).with_columns(pl.col("records_per_s", "p50_s", "p90_s").round(3))
        """,
        ignore_output=True,
    ),
    md(
        """
        What the measurements must show, whatever the machine: one request at a time
        (about 20 requests/s at 50 ms each) stays under the 40/s limit and is never
        throttled; sixteen at a time always is. The knee is at a few requests in flight, not
        at the top of the grid: past the server's limit, more concurrency buys 429s and
        `Retry-After` waits, not speed.
        """
    ),
    code(
        """
        results, knee = sweep
        by_concurrency = results.group_by("max_at_once").agg(pl.col("throttled").sum())
        throttled = dict(by_concurrency.iter_rows())
        print("never throttled at max_at_once=1:", throttled[1] == 0)
        print("throttled at max_at_once=16:", throttled[16] > 0)
        print("knee at 4 requests in flight or fewer:", knee["max_at_once"] <= 4)
        """
    ),
    md(
        """
        ## AIMD finds the limit

        With `Limits(adaptive=True)` (the default), the fetch engine moves each host's limit
        by AIMD: up by one while responses are healthy and the limit is in use, halved (at
        most once per round trip) on a 429, a 503 or a timeout. Set the ceiling far too high
        (32) and watch the adaptive limit come down to what the server tolerates. The tuner's
        charts plot throughput, latency, 429s and, in the last panel, the ceiling you set, the
        AIMD limit and the requests actually in flight.
        """
    ),
    code(
        """
        tuner.limit_slider.value = 32
        tuner.show()  # watch the limit come down: the charts fill in while the run goes on
        tuner.start(records=8000)  # runs as a background task: widgets stay responsive
        await tuner.wait()
        """
    ),
    md(
        """
        The same charts as static HTML, so they can be read where widgets do not render (on
        GitHub, in an exported report):
        """
    ),
    code(
        """
        from IPython.display import HTML

        HTML(tuner.charts.value)
        """,
        ignore_output=True,
    ),
    code(
        """
        samples = tuner.samples()
        samples.select("t", "limit", "max_at_once", "in_flight", "throttled", "items_per_s").with_columns(
            pl.col("t", "items_per_s").round(2)
        )
        """,
        ignore_output=True,
    ),
    code(
        """
        lowest = samples["limit"].min()
        print(f"ceiling 32; AIMD brought the limit below it: {lowest < 32}")
        print(f"the server answered 429 at least once: {samples['throttled'].sum() > 0}")
        """
    ),
    md(
        """
        The limit halves on each burst of 429s and settles at a few requests in flight,
        close to the server's capacity by Little's law (40 requests/s x 50 ms = 2 in flight),
        where the sweep put the knee. Every 429 costs a `Retry-After` second, which is why
        finding the limit by collision is slow: AIMD is the safety net, the sweep (or the
        supplier's documented quota, below) is how to pick the setting.

        In JupyterLab the sliders move the running fetch: drag `max_at_once` while it runs
        and the ceiling changes at once; `chunk size` applies to the pages not yet requested.
        Press **Start** to run it again.

        ## A supplier with a 20 requests/s quota

        The contract says 20 requests per second; going over gets us throttled, and repeated
        429s can get an API key suspended. Adaptive concurrency reacts to 429s *after* they
        happen; a quota should be respected *before*. That is `max_per_second`: a leaky bucket
        per host in the client. We set the portal to the supplier's quota and fetch the same
        120 pages twice: once with concurrency alone, once with the quota configured.
        """
    ),
    code(
        """
        portal.set_knobs(rate_limit=20, burst=None)  # the bucket holds one second's worth
        pages = scfeeds.plan_chunks(feed["lines_url"], total=feed["records"], chunk_size=30)[:120]

        runs = {}
        for name, limits in {
            "free": scfeeds.Limits(8),
            "quota": scfeeds.Limits(8, max_per_second=20),
        }.items():
            await asyncio.sleep(1.5)  # let the server's bucket refill between runs
            runs[name] = await scfeeds.fetch(  # a progress bar per run while it goes
                pages, root / name, limits=limits, progress=auto_progress(description=name),
                resume=False,
            )

        pl.DataFrame(
            [
                {
                    "limits": name,
                    "pages": r.succeeded,
                    "requests": r.requests,
                    "throttled_429": r.throttled,
                    "seconds": round(r.elapsed, 2),
                    "pages_per_s": round(r.items_per_second, 1),
                }
                for name, r in runs.items()
            ]
        )
        """,
        ignore_output=True,
    ),
    code(
        """
        free, quota = runs.values()
        print(f"every page landed in both runs: {free.succeeded == quota.succeeded == len(pages)}")
        print(f"the quota run was throttled less: {quota.throttled < free.throttled}")
        print(f"the quota run stayed near 20 requests/s: {quota.requests / quota.elapsed < 30}")
        """
    ),
    md(
        """
        Both runs deliver every page (429s are retried after `Retry-After`), but without
        the quota the client bursts past the limit and pays for it in 429s and waits; with
        `max_per_second=20` it paces itself and is (nearly) never throttled. The first
        second can still see a 429 at the edge of the server's bucket; the engine retries it.

        **What to set.** For a 20 requests/s quota:

        ```python
        limits = scfeeds.Limits(4, max_per_second=20)
        ```

        - `max_per_second=20` is the quota itself (per host).
        - `max_at_once` only needs to cover the quota over the round trip (Little's law:
          in flight = rate x latency = 20/s x 0.05 s = 1); 4 leaves room for slow responses
          without ever being the bottleneck, and AIMD will lower it if the server struggles.
        - Under a request quota, records per second = 20 x `chunk_size`: **ask for the
          largest pages the portal allows**. Chunk size, not concurrency, is the lever.
        """
    ),
    code(
        """
        await tuner.stop()
        portal.close()
        tmp.cleanup()
        """
    ),
]
