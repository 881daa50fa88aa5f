"""Test support for the lake: a loopback S3 server (moto), small X12 850 documents and
canonical frames committed as they are."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scfeeds._lake import BATCH_COL, DocumentCommit, commit_micro_batch


@dataclass(frozen=True)
class S3:
    """A running S3 server on loopback and the delta-rs options that reach it."""

    endpoint: str

    def options(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def new_lake(self) -> str:
        """A fresh bucket; returns ``s3://bucket/lake``."""
        import boto3

        name = f"lake-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=name)
        return f"s3://{name}/lake"

    def keys(self, uri: str) -> list[str]:
        import boto3

        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        out: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out


@contextmanager
def s3_server() -> Iterator[S3]:
    """moto's standalone S3 server in a thread on 127.0.0.1 (conditional puts supported)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()


def x12_850(n: int, rng: random.Random, *, supplier: str | None = None) -> tuple[bytes, int]:
    """One interchange with one 850 of 2-6 lines; returns (bytes, line count)."""
    lines = rng.randint(2, 6)
    ctrl = f"{n + 1:09d}"
    sup = supplier or f"SUP{rng.randint(1, 4):03d}"
    seg = [
        f"ISA*00*          *00*          *ZZ*SCFEEDSBUYER   *ZZ*{'SELLER':<15}"
        f"*261101*1200*U*00401*{ctrl}*0*P*>",
        f"GS*PO*SCFEEDSBUYER*SELLER*20261101*1200*{n + 1}*X*004010",
        "ST*850*0001",
        f"BEG*00*SA*PO{n + 1:07d}**20261101",
        "CUR*BY*USD",
        f"N1*SU*Supplier*92*{sup}",
    ]
    for i in range(1, lines + 1):
        seg.append(f"PO1*{i}*{rng.randint(1, 50)}*EA*{rng.randint(100, 9999) / 100:.2f}**BP*I{i}")
    seg += [f"SE*{len(seg) - 1}*0001", f"GE*1*{n + 1}", f"IEA*1*{ctrl}"]
    return ("~\n".join(seg) + "~\n").encode(), lines


def write_850s(folder: Path, n: int, *, seed: int = 0, start: int = 0) -> tuple[list[str], int]:
    """``n`` small 850 files in ``folder``; returns their paths and the total line count."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, total = [], 0
    for k in range(start, start + n):
        body, lines = x12_850(k, rng)
        path = folder / f"850_{k:05d}.x12"
        path.write_bytes(body)
        paths.append(str(path))
        total += lines
    return paths, total


def commit_frames(lake: Path, frames: Mapping[str, pl.DataFrame], *, source: str) -> None:
    """Each canonical frame (by table) committed to ``lake`` as its own micro-batch ``b0``,
    ``b1``... of one document from ``source``, rows unchanged."""
    for i, (table, frame) in enumerate(frames.items()):
        commit_micro_batch(
            lake,
            documents=[
                DocumentCommit(
                    batch=f"b{i}", source=source, sha256=str(i), format=None, table=table
                )
            ],
            tables={table: frame.with_columns(pl.lit(f"b{i}").alias(BATCH_COL))},  # type: ignore[dict-item]
            quarantine={},
            errors=None,
        )
