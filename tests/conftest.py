"""Fixtures shared by the test files: the servers the tests talk to and the synthetic worlds
they read.

- ``make_world``: ``scfeeds.synth.generate`` once per set of parameters per session;
- ``s3``: one moto S3 server on loopback for the session (each test makes its own bucket);
- ``redis_url``: a throwaway ``redis-server`` per test (a queue's state is the test's own).

Plain helpers (no fixture) live in support modules, imported as ``tests.<module>``:
``tests.lake_support`` (the S3 server, small 850s), ``tests.service_support`` (redis, worker
threads, the slow runner), ``tests.web_support`` (an aiohttp app on loopback),
``tests.progress_support`` (a recording progress sink, progress events),
``tests.synth_support`` (the match of a generated world).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lake_support import S3, s3_server
from tests.service_support import redis_server


@pytest.fixture(scope="session")
def make_world(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_world(**params)``: the folder of ``synth.generate(folder, **params)``.

    Generated once per distinct ``params`` in a session and shared by every test that asks:
    a test writes its own files elsewhere (``tmp_path``), never into a world.
    """
    from scfeeds import synth

    made: dict[str, Path] = {}

    def make(**params: object) -> Path:
        key = repr(sorted(params.items()))
        if key not in made:
            made[key] = tmp_path_factory.mktemp("world")
            synth.generate(made[key], **params)
        return made[key]

    return make


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's S3 server on loopback, for the whole session: ``s3.new_lake()`` per test."""
    with s3_server() as server:
        yield server


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A fresh ``redis-server`` on loopback for one test, stopped by PID after it."""
    with redis_server(tmp_path) as url:
        yield url
