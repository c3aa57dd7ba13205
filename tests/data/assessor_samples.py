#!/usr/bin/env python3
"""An assessor's five samples, answered from an evidence pack's files alone (standard library).

    python3 assessor_samples.py PACK_DIR PUBLISHED_ANCHOR

PUBLISHED_ANCHOR is `SEQ:HASH`, an anchor the assessor holds from outside the data dir (the
anchor file or the webhook that received it). Prints one JSON object with the answers; the
questions are those an assessor draws in a PCI DSS assessment:

1. who requested and approved port 127.0.0.3:6379/tcp, and why;
2. the change on 2026-10-10: what was detected, how long detection and the response took;
3. were there monitoring gaps in September, and in October (with their causes);
4. is the log unaltered since the published anchor (the pack's own checker, then the anchor
   found on the pack's journal);
5. the open ports on 2026-11-20, each with the approval in force then.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def overlaps(entry: dict, start: str, end: str) -> bool:
    return entry["start"] < end and entry["end"] > start


def main() -> int:
    pack = Path(sys.argv[1])
    anchor_seq, _, anchor_hash = sys.argv[2].partition(":")
    figures = json.loads((pack / "figures.json").read_text("utf-8"))
    answers: dict = {}

    # 1. Who approved port X and why.
    (row,) = [
        r
        for r in figures["approvals"]["register"]
        if (r["host"], r["port"], r["proto"]) == ("127.0.0.3", 6379, "tcp")
    ]
    answers["approval"] = {
        key: row[key]
        for key in (
            "id",
            "justification",
            "ticket",
            "requested_by",
            "requested_at",
            "approved_by",
            "recorded_at",
            "four_eyes",
            "last_review",
        )
    }

    # 2. The change on a date, with detection and response times.
    answers["change"] = [
        {
            key: f[key]
            for key in (
                "id",
                "kind",
                "host",
                "port",
                "detected",
                "time_to_detect_seconds",
                "responded",
                "response_step",
                "time_to_respond_seconds",
                "decided_by",
                "status_at_end",
                "sla_breach",
            )
        }
        for f in figures["findings"]
        if f["detected"].startswith("2026-10-10")
    ]

    # 3. Gaps in a month, from the coverage ledger.
    def gaps(start: str, end: str) -> list:
        return [
            {
                "group": g["group"],
                "start": e["start"],
                "end": e["end"],
                "cause": e["cause"],
                "closed_cause": e["closed_cause"],
                "finding_id": e["finding_id"],
            }
            for g in figures["continuity"]["groups"]
            for e in g["entries"]
            if e["kind"] == "gap" and overlaps(e, start, end)
        ]

    answers["gaps_september"] = gaps("2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z")
    answers["gaps_october"] = gaps("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")

    # 4. The log unaltered since an anchor: the pack's checker, and the anchor on its chain.
    checked = subprocess.run(
        [sys.executable, "-I", str(pack / "verify_pack.py"), str(pack)],
        capture_output=True,
        text=True,
        check=False,
    )
    on_chain = False
    for segment in sorted((pack / "journal").glob("*.jsonl")):
        for line in segment.read_text("utf-8").splitlines():
            event = json.loads(line)
            if str(event["seq"]) == anchor_seq:
                on_chain = event["hash"] == anchor_hash
    answers["log"] = {
        "checker_exit": checked.returncode,
        "checker_says": checked.stdout.strip().splitlines()[-1:],
        "anchor_on_chain": on_chain,
    }

    # 5. The population on a date, each port with the approval in force then.
    (sample,) = [s for s in figures["population"]["samples"] if s["at"].startswith("2026-11-2")]
    answers["population"] = {
        "at": sample["at"],
        "ports": [
            {
                key: p[key]
                for key in (
                    "host",
                    "port",
                    "proto",
                    "service",
                    "approval_id",
                    "approval_recorded_at",
                    "approved_by",
                    "finding_id",
                )
            }
            for p in sample["ports"]
        ],
    }
    print(json.dumps(answers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
