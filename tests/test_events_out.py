"""Events out: the journal as CEF and RFC 5424 syslog (parsed strictly), `events --follow`,
the webhook document against its JSON Schema, the HMAC signature on a real HTTP server,
`export-xml` byte for byte, and `import` delivering like `scan`."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from portconsole.cli import main
from portconsole.core.monitor import Monitor
from portconsole.core.services.events_out import to_cef, to_syslog
from tests.conftest import write_config
from tests.replay import replay_monitor
from tests.servers import CaughtRequest, HttpCatcher

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_XML = ROOT / "tests" / "data" / "nmap_loopback.xml"
SCHEMA = json.loads((ROOT / "docs" / "webhook.schema.json").read_text())
# Every character a SIEM line must survive: CEF's and syslog's separators and escapes,
# line breaks, a right-to-left override and a zero-width space.
NASTY = 'a|b=c\\d "q" ]x[\nnext\rline \u202eevil\u200b end'


def _cli(tmp_path: Path, *args: str) -> list[str]:
    return ["--config", str(tmp_path / "config.toml"), "--data-dir", str(tmp_path / "data"), *args]


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(_cli(tmp_path, *args))
    return code, capsys.readouterr().out


def _journal_with_nasty_note(tmp_path: Path) -> Monitor:
    monitor, _ = replay_monitor(tmp_path, {"127.0.0.2": {22: "ssh", 2222: "ssh"}})
    result = monitor.run_cycle(targets=["127.0.0.2"], ports="22,2222")
    result.settle_fingerprint(30)  # its -sV is a later transaction: landed before the reads
    monitor.note(result.findings[0].id, NASTY)
    return monitor


# ----- a strict CEF parser (ArcSight CEF, "Implementing ArcSight CEF" rev. 25) ------------------

_CEF_KEY = re.compile(r"[A-Za-z0-9_]+")


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Seven header fields and the extension; raises ValueError on anything the spec forbids:
    a header may escape only `\\` and `|`; an extension value only `\\`, `=`, `\\n`, `\\r`, and
    an unescaped `=` in a value or a line break anywhere is an error."""
    if "\n" in line or "\r" in line:
        raise ValueError("a raw line break in a CEF line")
    header: list[str] = []
    current: list[str] = []
    i = 0
    while len(header) < 7:
        if i >= len(line):
            raise ValueError(f"only {len(header)} header fields")
        char = line[i]
        if char == "\\":
            nxt = line[i + 1 : i + 2]
            if nxt not in ("\\", "|"):
                raise ValueError(f"bad header escape \\{nxt!r}")
            current.append(nxt)
            i += 2
            continue
        if char == "|":
            header.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if not header[0].startswith("CEF:"):
        raise ValueError("no CEF:Version")
    extension: dict[str, str] = {}
    rest = line[i:]
    pos = 0
    while pos < len(rest):
        key_match = _CEF_KEY.match(rest, pos)
        if key_match is None or rest[key_match.end() : key_match.end() + 1] != "=":
            raise ValueError(f"expected key= at {rest[pos : pos + 20]!r}")
        key = key_match.group()
        pos = key_match.end() + 1
        value: list[str] = []
        while pos < len(rest):
            char = rest[pos]
            if char == "\\":
                nxt = rest[pos + 1 : pos + 2]
                mapped = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}.get(nxt)
                if mapped is None:
                    raise ValueError(f"bad extension escape \\{nxt!r} in {key}")
                value.append(mapped)
                pos += 2
                continue
            if char == "=":
                raise ValueError(f"unescaped = in the value of {key}")
            if char == " " and _CEF_KEY.match(rest, pos + 1):
                following = _CEF_KEY.match(rest, pos + 1)
                assert following is not None
                if rest[following.end() : following.end() + 1] == "=":
                    pos += 1
                    break
            value.append(char)
            pos += 1
        if key in extension:
            raise ValueError(f"key {key} twice")
        extension[key] = "".join(value)
    return header, extension


def test_events_as_cef_parse_strictly_and_keep_every_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monitor = _journal_with_nasty_note(tmp_path)
    code, out = _run(tmp_path, capsys, "events", "--format", "cef")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == monitor.audit.tip().seq
    parsed = [parse_cef(line) for line in lines]
    for header, ext in parsed:
        assert header[:4] == ["CEF:0", "PortConsole", "PortConsole", "0.1.0"]
        assert 0 <= int(header[6]) <= 10
        assert ext["act"] == header[4]
    raised = [(h, e) for h, e in parsed if h[4] == "finding.raised"]
    assert raised and all(h[6] in ("3", "5", "8", "10") for h, _ in raised)
    assert {e["dst"] for _, e in raised} == {"127.0.0.2"}
    assert {e["dpt"] for _, e in raised if "dpt" in e} == {"22", "2222"}
    (note,) = [e for h, e in parsed if h[4] == "finding.note"]
    # msg is the details as ASCII JSON: the text comes back exactly, and the bidi and
    # zero-width characters travel only as \u escapes, never raw.
    assert json.loads(note["msg"])["text"] == NASTY
    assert "\u202e" not in out and "\u200b" not in out
    # The parser itself refuses what the spec forbids.
    with pytest.raises(ValueError):
        parse_cef("CEF:0|a|b|c|d|e|1|msg=x=y")
    with pytest.raises(ValueError):
        parse_cef("CEF:0|a|b\\x|c|d|e|1|msg=x")


def test_a_header_field_with_pipes_and_backslashes_is_escaped() -> None:
    record = {
        "seq": 1,
        "id": "x",
        "at": "2026-05-27T00:00:00Z",
        "action": "odd|action\\name",
        "outcome": "failure",
        "actor": {"user": "a=b", "host": "h"},
        "resource": {"host": "::1", "port": 22, "proto": "tcp"},
        "details": {},
        "hash": "0" * 64,
    }
    header, ext = parse_cef(to_cef(record))
    assert header[4] == "odd|action\\name" and header[6] == "5"
    assert ext["suser"] == "a=b" and ext["dhost"] == "::1" and ext["proto"] == "TCP"


# ----- RFC 5424 -------------------------------------------------------------------------------

_PARAM_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'
_SD_NAME = r"[!#-<>-\\^-~]{1,32}"  # PRINTUSASCII except '=', ' ', ']', '"'
_SD_ELEMENT = rf'\[{_SD_NAME}(?: {_SD_NAME}="{_PARAM_VALUE}")*\]'
SYSLOG = re.compile(
    r"^<(?P<pri>\d{1,3})>1 "
    r"(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) "
    r"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) "
    r"(?P<msgid>[!-~]{1,32}) "
    rf"(?P<sd>-|(?:{_SD_ELEMENT})+)"
    r"(?: (?P<msg>.*))?$"
)


def _sd_params(sd: str) -> dict[str, str]:
    return {
        name: re.sub(r'\\(["\\\]])', r"\1", value)
        for name, value in re.findall(rf'({_SD_NAME})="({_PARAM_VALUE})"', sd)
    }


def test_events_as_syslog_match_the_rfc_5424_grammar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _journal_with_nasty_note(tmp_path)
    code, out = _run(tmp_path, capsys, "events", "--format", "syslog")
    assert code == 0
    lines = out.splitlines()
    assert lines
    for line in lines:
        match = SYSLOG.match(line)
        assert match, line
        pri = int(match["pri"])
        assert pri // 8 == 13 and pri % 8 in range(8)  # log audit
        datetime.fromisoformat(match["ts"].replace("Z", "+00:00"))
        assert match["app"] == "portconsole"
        assert match["sd"].startswith("[portconsole@32473 ")
        assert line.isascii() or "\u202e" not in line
    raised = [SYSLOG.match(line) for line in lines if " finding.raised " in line]
    assert raised and {m["pri"] for m in raised if m} <= {"106", "107", "108", "109"}
    (note,) = [SYSLOG.match(line) for line in lines if " finding.note " in line]
    assert note is not None
    assert json.loads(note["msg"])["text"] == NASTY
    # A value holding ", \ and ] is escaped inside the structured data.
    record = {
        "seq": 7,
        "at": "2026-05-27T00:00:00Z",
        "action": "finding.note",
        "outcome": "success",
        "actor": {"user": 'al"i]c\\e', "host": "ops 1"},
        "resource": {"finding_id": "F-1"},
        "details": {},
    }
    line = to_syslog(record)
    match = SYSLOG.match(line)
    assert match, line
    assert _sd_params(match["sd"])["user"] == 'al"i]c\\e'
    assert match["host"] == "ops1"


# ----- follow and closed pipes ----------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")} | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "PYTHONUNBUFFERED": "1",
    }


def _follow(tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "portconsole.cli", *_cli(tmp_path, "events", "--follow")]
        + ["--poll", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
    )


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return got[0] if got else b""


def test_follow_prints_each_new_event_then_ends_quietly_on_a_closed_pipe(tmp_path: Path) -> None:
    monitor = _journal_with_nasty_note(tmp_path)
    finding_id = monitor.findings()[0].id
    follower = _follow(tmp_path)
    try:
        time.sleep(1.5)  # started, at the head: nothing old is printed
        monitor.ack(finding_id)
        line = _read_line(follower, 10)
        event = json.loads(line)
        assert event["action"] == "finding.ack"
        assert event["resource"]["finding_id"] == finding_id
        assert event["seq"] == monitor.audit.tip().seq
        # The reader goes away; the next event ends the follower with exit 0, silently.
        assert follower.stdout is not None
        follower.stdout.close()
        monitor.note(finding_id, "after the reader left")
        assert follower.wait(10) == 0
        assert follower.stderr is not None
        assert follower.stderr.read() == b""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


# ----- webhooks -------------------------------------------------------------------------------


def _header(request: CaughtRequest, name: str) -> str | None:
    return {k.lower(): v for k, v in request.headers.items()}.get(name.lower())


def _webhook_config(tmp_path: Path, http: HttpCatcher, notify: str) -> str:
    return (
        f"\n[notify]\n{notify}\n[[notify.urls]]\n"
        f'url = "json://127.0.0.1:{http.port}/hook"\ntimeout = 3\n'
    )


def test_the_webhook_document_validates_and_is_signed_over_the_exact_body(
    tmp_path: Path,
) -> None:
    secret = "hmac-key-\u00e9-1"
    with HttpCatcher() as http:
        extra = _webhook_config(tmp_path, http, f'webhook_secret = "{secret}"')
        monitor, _ = replay_monitor(tmp_path, {"127.0.0.2": {22: "ssh", 2222: "ssh"}}, extra=extra)
        result = monitor.run_cycle(targets=["127.0.0.2"], ports="22,2222")
        assert result.findings
        monitor.deliver(seconds=10)
        caught = http.wait_for(len(result.findings))
        assert len(caught) == len(result.findings)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for request in caught:
        expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
        assert _header(request, "X-PortConsole-Signature") == expected
        document = json.loads(request.json()["message"])
        validator.validate(document)
        assert document["schema"] == 1
    # The schema is not a rubber stamp: a document of another layout fails it.
    broken = {**document, "schema": "portconsole.notification/1"}
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**document, "findings": [{"finding_id": "x"}]})
    # The key is a secret: nothing PortConsole stores or shows holds it.
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_key_named_by_an_unset_variable_sends_nothing_unsigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HttpCatcher() as http:
        extra = _webhook_config(tmp_path, http, 'webhook_secret_env = "PC_TEST_HOOK_KEY"')
        monkeypatch.delenv("PC_TEST_HOOK_KEY", raising=False)
        monitor, _ = replay_monitor(tmp_path, {"127.0.0.2": {2222: "ssh"}}, extra=extra)
        monitor.run_cycle(targets=["127.0.0.2"], ports="2222")
        results = monitor.deliver(seconds=5)
        assert results and not any(r.ok for r in results)
        assert "PC_TEST_HOOK_KEY" in str(results[0].error)
        assert http.requests == []
        monkeypatch.setenv("PC_TEST_HOOK_KEY", "from-the-env")
        results = monitor.flush_outbox(seconds=10)
        assert results and all(r.ok for r in results)
        (request, *_) = http.wait_for(1)
    expected = hmac.new(b"from-the-env", request.body, hashlib.sha256).hexdigest()
    assert _header(request, "X-PortConsole-Signature") == f"sha256={expected}"


def test_without_a_key_no_signature_header_is_sent(tmp_path: Path) -> None:
    with HttpCatcher() as http:
        extra = _webhook_config(tmp_path, http, "")
        monitor, _ = replay_monitor(tmp_path, {"127.0.0.2": {2222: "ssh"}}, extra=extra)
        monitor.run_cycle(targets=["127.0.0.2"], ports="2222")
        monitor.deliver(seconds=10)
        (request, *_) = http.wait_for(1)
    assert _header(request, "X-PortConsole-Signature") is None
    jsonschema.validate(json.loads(request.json()["message"]), SCHEMA)


# ----- import delivers; export-xml ------------------------------------------------------------


def test_import_delivers_its_notifications_with_product_and_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with HttpCatcher() as http:
        write_config(tmp_path / "config.toml", extra=_webhook_config(tmp_path, http, ""))
        code, _ = _run(tmp_path, capsys, "import", str(SAMPLE_XML), "--notify-wait", "10")
        assert code == 0
        # Delivered before `import` returned: nothing else runs a delivery here.
        caught = http.accepted
    documents = [json.loads(r.json()["message"]) for r in caught]
    assert documents
    for document in documents:
        jsonschema.validate(document, SCHEMA)
    findings: list[dict[str, Any]] = [f for d in documents for f in d["findings"]]
    ssh = [f for f in findings if f["port"] == 22]
    assert ssh and ssh[0]["product"] == "OpenSSH" and ssh[0]["version"]
    code, out = _run(tmp_path, capsys, "notify", "status", "--json")
    assert json.loads(out)["counts"]["pending"] == 0


def test_export_xml_writes_the_raw_report_back_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(tmp_path / "config.toml")
    code, out = _run(tmp_path, capsys, "import", str(SAMPLE_XML), "--json")
    assert code == 0
    scan_id = json.loads(out)["scan_id"]
    target = tmp_path / "out" / "scan.xml"
    target.parent.mkdir()
    code, _ = _run(tmp_path, capsys, "export-xml", scan_id, "-o", str(target))
    assert code == 0
    assert target.read_bytes() == SAMPLE_XML.read_bytes()
    # No overwrite without --force; with it, the same bytes again.
    target.write_bytes(b"mine")
    assert main(_cli(tmp_path, "export-xml", scan_id, "-o", str(target))) == 2
    assert "--force" in capsys.readouterr().err
    assert target.read_bytes() == b"mine"
    assert main(_cli(tmp_path, "export-xml", scan_id, "-o", str(target), "--force")) == 0
    assert target.read_bytes() == SAMPLE_XML.read_bytes()
    assert main(_cli(tmp_path, "export-xml", "s-nope", "-o", str(tmp_path / "x.xml"))) == 2
    assert "no scan" in capsys.readouterr().err
