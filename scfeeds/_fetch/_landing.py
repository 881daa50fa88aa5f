"""Landing: temporary files hashed while written, atomic rename, and the resume manifest.

Layout inside ``dest``::

    dest/<path>                        landed files (complete or absent)
    dest/.scfeeds/manifest.jsonl       one JSON line per landed item, appended after the rename
    dest/.scfeeds/partial/<key>.part   body bytes of an interrupted transfer
    dest/.scfeeds/partial/<key>.json   the validator (ETag / Last-Modified) those bytes belong to
    dest/.scfeeds/redaction.key        random key of the digests that stand for secret query
                                       values in shown URLs (stable for this folder)

The manifest is append-only, so a process killed mid-write leaves at most one torn last
line, which :meth:`Manifest.load` ignores; the last record of a key wins. Order of
operations makes a kill at any point safe: bytes go to ``.part``, the rename publishes the
file, then the manifest line records it. A kill between rename and manifest line costs one
re-download of the same bytes to the same path (not a duplicate). Writes are not fsync'ed:
this protects against a crashed or killed process, not against power loss.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scfeeds._redact import new_key
from scfeeds.exceptions import ConfigurationError, StorageError

META_DIR = ".scfeeds"


@dataclass(frozen=True, kw_only=True)
class Record:
    """One manifest line. ``url`` is redacted; ``key`` identifies the full URL."""

    key: str
    url: str
    path: str
    bytes: int
    sha256: str
    etag: str | None
    last_modified: str | None
    attempts: int
    time: str


class Landing:
    """The on-disk side of a fetch: manifest, partial files, final paths."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = Path(dest).resolve()
        if self.dest.exists() and not self.dest.is_dir():
            raise ConfigurationError(f"dest {str(self.dest)!r} exists and is not a directory")
        self.meta = self.dest / META_DIR
        self.partial = self.meta / "partial"
        self.manifest_path = self.meta / "manifest.jsonl"
        try:
            self.partial.mkdir(parents=True, exist_ok=True)
            self._manifest = self.manifest_path.open("a", encoding="utf-8")
        except OSError as exc:
            self._raise_if_full(exc)
            raise
        self._key: bytes | None = None

    def _raise_if_full(self, exc: OSError) -> None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(
                f"no space left on device writing {exc.filename or self.meta}",
                path=str(exc.filename or self.meta),
            ) from exc

    @property
    def redaction_key(self) -> bytes:
        """This folder's key of the digests that stand for secret URL parts, created the
        first time a URL with a secret needs it (a run without one leaves no key behind)."""
        if self._key is None:
            try:
                self._key = self._redaction_key()
            except OSError as exc:
                self._raise_if_full(exc)
                raise
        return self._key

    def _redaction_key(self) -> bytes:
        """This folder's key (created once, readable by its owner only): the same URL is
        shown the same way in every run's report, manifest and lake provenance."""
        path = self.meta / "redaction.key"
        damaged = False
        try:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
            if len(key) >= 16:
                return key
            damaged = True
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            damaged = True
        key = new_key()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.hex())
        try:
            if damaged:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # the first writer wins; a concurrent run reads its key
        except FileExistsError:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return key

    def close(self) -> None:
        self._manifest.close()
        # Leave no empty scaffolding behind (an empty manifest included); partial files of
        # interrupted runs stay.
        with contextlib.suppress(OSError):
            if self.manifest_path.stat().st_size == 0:
                self.manifest_path.unlink()
        with contextlib.suppress(OSError):
            self.partial.rmdir()

    def load(self) -> dict[str, Record]:
        """The manifest as ``{key: last record}``; a torn last line is skipped."""
        records: dict[str, Record] = {}
        with self.manifest_path.open("r", encoding="utf-8") as fh:
            for line in fh:
                try:
                    raw: dict[str, Any] = json.loads(line)
                    record = Record(**raw)
                except (ValueError, TypeError):
                    continue
                records[record.key] = record
        return records

    def append(self, record: Record) -> None:
        self._manifest.write(json.dumps(vars(record), separators=(",", ":")) + "\n")
        self._manifest.flush()

    def final(self, relpath: str) -> Path:
        """The absolute path of a landed file, refusing anything outside ``dest``."""
        # Lexical check (no resolve(): a stat per component per item adds up); relpath comes
        # from safe_relpath/safe_segment, which never yields "..".
        path = Path(os.path.normpath(self.dest / relpath))
        if not path.is_relative_to(self.dest) or path == self.dest:
            raise ConfigurationError(f"landing path {relpath!r} escapes dest")
        if path.is_relative_to(self.meta):
            raise ConfigurationError(f"landing path {relpath!r} is inside {META_DIR}/")
        return path

    def partial_keys(self) -> set[str]:
        """Keys of partial bodies left by earlier (killed) runs."""
        return {p.stem for p in self.partial.glob("*.part")}

    def part(self, key: str) -> Path:
        return self.partial / f"{key}.part"

    def part_meta(self, key: str) -> Path:
        return self.partial / f"{key}.json"

    def read_part_meta(self, key: str) -> dict[str, str | None] | None:
        try:
            data = json.loads(self.part_meta(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_part_meta(self, key: str, etag: str | None, last_modified: str | None) -> None:
        tmp = self.part_meta(key).with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"etag": etag, "last_modified": last_modified}))
        os.replace(tmp, self.part_meta(key))

    def discard_part(self, key: str) -> None:
        for path in (self.part(key), self.part_meta(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def publish(self, key: str, relpath: str) -> Path:
        """Atomically move the finished ``.part`` to its final path."""
        final = self.final(relpath)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.part(key), final)
        with contextlib.suppress(FileNotFoundError):
            self.part_meta(key).unlink()
        return final


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
