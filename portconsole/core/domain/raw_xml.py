"""A scan's raw nmap XML, kept gzip-compressed from the moment nmap writes it.

Why: the raw reports are evidence (stored as `.xml.gz`, each hashed), but a /16 sweep writes
~110 MB of XML that nothing reads until the store compresses it. The scanner compresses
each run's stdout as it arrives (`GzipMember.writer`), so a scan holds ~1/30 of that, and
the store writes the members it is given instead of compressing again (`gzip_members`).
`GzipDocuments` is still a sequence of the plain documents for whoever reads one
(decompressed on access, one at a time).

A member is what `gzip.compress(doc, mtime=0)` writes (level 9, no name, no time), so a
report stored this way is the same file as one compressed by the store.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator, Sequence
from typing import overload

from msgspec import Struct

_LEVEL = 9  # gzip.compress's default, which the store has always used
_GZIP_WBITS = 31  # zlib's gzip wrapper: header with mtime 0, as gzip.compress(mtime=0)


class GzipMember(Struct, frozen=True):
    """One document compressed as a gzip member, with the sha256 of the plain document."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, document: bytes) -> GzipMember:
        return cls(gzip.compress(document, mtime=0), hashlib.sha256(document).hexdigest())

    @staticmethod
    def writer() -> GzipWriter:
        return GzipWriter()

    def document(self) -> bytes:
        return gzip.decompress(self.data)


class GzipWriter:
    """Compresses and hashes a document fed in pieces; `finish` gives the member."""

    def __init__(self) -> None:
        self._zip = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        self._hash = hashlib.sha256()
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self._hash.update(data)
        if out := self._zip.compress(data):
            self._parts.append(out)

    def finish(self) -> GzipMember:
        self._parts.append(self._zip.flush())
        return GzipMember(b"".join(self._parts), self._hash.hexdigest())


class GzipDocuments(Sequence[bytes]):
    """Plain documents held as gzip members; indexing decompresses one."""

    def __init__(self, members: Sequence[GzipMember]) -> None:
        self._members = list(members)

    def __len__(self) -> int:
        return len(self._members)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [m.document() for m in self._members[index]]
        return self._members[index].document()

    def __iter__(self) -> Iterator[bytes]:
        return (m.document() for m in self._members)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def members(self) -> list[GzipMember]:
        return list(self._members)

    def sha256(self) -> str:
        """The sha256 of the documents joined in order, one decompressed at a time."""
        digest = hashlib.sha256()
        for document in self:
            digest.update(document)
        return digest.hexdigest()


def gzip_members(documents: Sequence[bytes]) -> tuple[bytes, list[str]]:
    """The `.xml.gz` file of these documents (one member each) and each one's sha256."""
    if isinstance(documents, GzipDocuments):
        members = documents.members
    else:
        members = [GzipMember.of(doc) for doc in documents]
    return b"".join(m.data for m in members), [m.sha256 for m in members]
