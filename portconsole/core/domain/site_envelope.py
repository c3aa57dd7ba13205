"""Signed site jobs and results: the canonical encoding, the HMAC and its checks.

Why a module of its own: the central that sends a job and checks a result, and the site
worker that checks a job and signs its result, must encode and sign byte for byte alike,
or every result is refused. Pure (no I/O): both sides and the tests use these functions.

A message is `{"meta": {...}, "signature": HEX}` (a result also carries `"xml"`: the raw
nmap reports, each gzip-compressed and base64-encoded). The signature is HMAC-SHA256, keyed
with the site's shared key, over a label naming the message's kind and the canonical JSON
of `meta` (sorted keys, compact, UTF-8). A result's `meta["xml"]` lists the sha256 of each
compressed report and of the plain document, so the signature vouches for the XML without
the XML being signed twice; the receiver checks the compressed bytes against it before it
decompresses anything. Signatures are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from portconsole.core.errors import UserError

VERSION = 1
JOB = "portconsole-site-job-v1"
RESULT = "portconsole-site-result-v1"
# Job kinds: a sweep (raw XML back), a re-probe of ports, service detection on ports.
KINDS = ("scan", "probe", "fingerprint")


class EnvelopeRefused(UserError):
    """A job or result that is malformed, unsigned or signed with another key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # unsigned | mis-signed | malformed | xml-mismatch


def canonical(data: Any) -> bytes:
    """The one encoding that is signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(label: str, meta: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, label.encode() + b"\n" + canonical(meta), hashlib.sha256).hexdigest()


def seal(
    label: str, meta: dict[str, Any], key: bytes, xml: list[bytes] | None = None
) -> dict[str, Any]:
    """A signed message; `xml` (compressed reports) are listed in meta by their hashes."""
    meta = dict(meta)
    if xml is not None:
        meta["xml"] = [
            {"gz_sha256": hashlib.sha256(data).hexdigest(), "sha256": plain}
            for data, plain in zip(xml, meta.pop("xml_plain_sha256"), strict=True)
        ]
    message: dict[str, Any] = {"meta": meta, "signature": signature(label, meta, key)}
    if xml is not None:
        message["xml"] = [base64.b64encode(data).decode("ascii") for data in xml]
    return message


def unseal(label: str, message: object, key: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The checked meta and compressed reports of a message. Raises EnvelopeRefused."""
    if not isinstance(message, dict) or not isinstance(message.get("meta"), dict):
        raise EnvelopeRefused("malformed", "site message refused: not a site message")
    meta: dict[str, Any] = message["meta"]
    given = message.get("signature")
    if not isinstance(given, str) or not given:
        raise EnvelopeRefused("unsigned", "site message refused: it is not signed")
    if not hmac.compare_digest(given.encode(), signature(label, meta, key).encode()):
        raise EnvelopeRefused(
            "mis-signed", "site message refused: its signature does not match the site's key"
        )
    listed = meta.get("xml", [])
    encoded = message.get("xml", [])
    if not isinstance(listed, list) or not isinstance(encoded, list) or len(listed) != len(encoded):
        raise EnvelopeRefused("malformed", "site result refused: its reports do not match its list")
    reports: list[bytes] = []
    for entry, text in zip(listed, encoded, strict=True):
        try:
            data = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeRefused(
                "malformed", "site result refused: a report is not base64"
            ) from None
        if not isinstance(entry, dict) or not hmac.compare_digest(
            hashlib.sha256(data).hexdigest(), str(entry.get("gz_sha256", ""))
        ):
            raise EnvelopeRefused(
                "xml-mismatch", "site result refused: a report's sha256 is not the signed one"
            )
        reports.append(data)
    return meta, reports
