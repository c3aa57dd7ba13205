"""Notifications: outbox, routing, templates, retries, masking — against real local servers."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from portconsole.core.adapters import notify as notify_module
from portconsole.core.adapters.notify import OUTBOX_TABLE, DeliveryWorker, Notifier
from portconsole.core.adapters.storage import AtomicJSONStorage, DataLock
from portconsole.core.domain.notification import (
    DEAD,
    DELIVERED,
    PAYLOAD_SCHEMA,
    PENDING,
    DeliveryResult,
    OutboxMessage,
    from_finding,
)
from portconsole.core.errors import ConfigError
from portconsole.core.secrets import config_secrets, mask_text, mask_url
from portconsole.core.settings import NotifySettings
from portconsole.core.settings_sections import NotifyTarget
from portconsole.core.strict import convert
from portconsole.core.timeutil import utcnow
from tests.servers import HttpCatcher, SmtpCatcher, free_port


class Clock:
    """A settable UTC clock, so backoff and the rate window need no sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Store:
    path: Path
    db: TinyDB
    lock: DataLock

    def outbox(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.db.table(OUTBOX_TABLE, cache_size=0).all()]


def open_store(folder: Path) -> Store:
    path = folder / "hot.json"
    return Store(path, TinyDB(path, storage=AtomicJSONStorage), DataLock(folder / "store.lock"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def settings(*urls: str | NotifyTarget | dict[str, Any], **overrides: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "urls": list(urls),
        "backoff_seconds": 1.0,
        "backoff_max_seconds": 30.0,
        "max_attempts": 5,
    }
    values.update(overrides)
    return convert(values, NotifySettings)


def json_target(
    http: HttpCatcher, path: str = "/hook", timeout: float = 2.0, **extra: Any
) -> dict[str, Any]:
    return {"url": f"json://127.0.0.1:{http.port}{path}", "timeout": timeout, **extra}


def finding(
    n: int, severity: str = "high", kind: str = "unapproved_port", **extra: Any
) -> dict[str, Any]:
    return {
        "finding_id": f"f-{n}",
        "kind": kind,
        "severity": severity,
        "host": "127.0.0.2",
        "port": 40000 + n,
        "proto": "tcp",
        "service": "ssh",
        "product": "OpenSSH",
        "version": "9.2",
        "first_seen": "2026-05-27T00:00:00Z",
        "scan_id": "",
        "status": "open",
        "details": {"n": n},
        **extra,
    }


def documents(http: HttpCatcher) -> list[dict[str, Any]]:
    """The PortConsole documents a JSON target received (apprise wraps them in `message`)."""
    return [json.loads(r.json()["message"]) for r in http.accepted]


# ----- one finding, one message ----------------------------------------------------------


def test_new_finding_sends_exactly_one_json_message(store: Store) -> None:
    results: list[tuple[OutboxMessage, DeliveryResult]] = []
    with HttpCatcher() as http:
        notifier = Notifier(
            settings(json_target(http)),
            store.db,
            store.lock,
            on_result=lambda m, r: results.append((m, r)),
            console_host="console-1",
        )
        queued = notifier.enqueue([finding(1)], "scan-1")
        # Written before any delivery: pending, no attempt yet, nothing sent.
        assert [(m["status"], m["attempts"]) for m in store.outbox()] == [(PENDING, 0)]
        assert http.requests == []

        delivered = notifier.deliver_due()
        assert notifier.deliver_due() == []  # nothing left: no second copy

        assert len(http.requests) == 1
        request = http.requests[0]
        assert request.path == "/hook"
        envelope = request.json()
        assert set(envelope) == {"version", "title", "message", "attachments", "type"}
        assert envelope["title"] == "[PortConsole] high unapproved_port: 127.0.0.2:40001/tcp"
        document = json.loads(envelope["message"])
        # The documented, stable shape (docs/notifications.md).
        assert set(document) == {
            "schema",
            "message_id",
            "type",
            "console_host",
            "scan_id",
            "created_at",
            "severity",
            "title",
            "text",
            "findings",
        }
        assert document["schema"] == PAYLOAD_SCHEMA
        assert document["type"] == "finding"
        assert document["message_id"] == queued[0].id
        assert document["scan_id"] == "scan-1"
        assert document["console_host"] == "console-1"
        assert document["severity"] == "high"
        expected = {**finding(1), "scan_id": "scan-1"}
        assert document["findings"] == [expected]

    assert [r.ok for r in delivered] == [True]
    assert [(m.id, r.status, r.attempts) for m, r in results] == [(queued[0].id, DELIVERED, 1)]
    assert results[0][1].finding_ids == ("f-1",)
    [stored] = store.outbox()
    assert stored["status"] == DELIVERED and stored["delivered_at"]


def test_new_finding_sends_exactly_one_email(store: Store) -> None:
    with SmtpCatcher(user="user", password="secretpw") as smtp:
        url = (
            f"mailto://user:secretpw@127.0.0.1:{smtp.port}"
            "?to=ops@example.com&from=pc@example.com&smtp=127.0.0.1"
        )
        notifier = Notifier(settings({"url": url, "timeout": 3}), store.db, store.lock)
        notifier.enqueue([finding(1), finding(2, severity="medium")], "scan-1")
        results = notifier.deliver_due()
        mails = smtp.wait_for(2)
        time.sleep(0.05)
        assert len(smtp.messages) == 2  # one each, no retry duplicates
    assert [r.ok for r in results] == [True, True]
    assert [m.subject for m in mails] == [
        "[PortConsole] high unapproved_port: 127.0.0.2:40001/tcp",
        "[PortConsole] medium unapproved_port: 127.0.0.2:40002/tcp",
    ]
    assert mails[0].rcpt_tos == ["ops@example.com"]
    assert mails[0].mail_from == "pc@example.com"
    assert mails[0].authenticated
    assert "unapproved_port on 127.0.0.2:40001/tcp (ssh), severity high" in mails[0].text()
    assert "finding f-1, scan scan-1" in mails[0].text()


def test_form_target_gets_the_document_in_message(store: Store) -> None:
    with HttpCatcher() as http:
        notifier = Notifier(
            settings({"url": f"form://127.0.0.1:{http.port}/t", "timeout": 2}), store.db, store.lock
        )
        notifier.enqueue([finding(7)], "scan-7")
        assert [r.ok for r in notifier.deliver_due()] == [True]
        [request] = http.requests
    from urllib.parse import parse_qs

    form = parse_qs(request.body.decode())
    document = json.loads(form["message"][0])
    assert document["findings"][0]["finding_id"] == "f-7"
    assert document["findings"][0]["port"] == 40007


def test_from_finding_reads_attributes_and_sanitises_templates(store: Store) -> None:
    @dataclass
    class Finding:  # the shape of the findings module's record
        id: str
        kind: str
        severity: str
        host: str
        port: int | None
        proto: str | None
        service: str
        first_seen: datetime
        scan_id: str
        status: str
        details: dict[str, Any]

    seen = datetime(2026, 5, 27, 12, 0, tzinfo=utcnow().tzinfo)
    obj = Finding(
        "f-9",
        "host_gone",
        "medium",
        "127.0.0.9",
        None,
        None,
        "x\x1b[31mred",
        seen,
        "s-9",
        "open",
        {"last_seen": seen},
    )
    converted = from_finding(obj)
    assert converted.finding_id == "f-9"
    assert converted.first_seen == "2026-05-27T12:00:00Z"
    assert converted.port is None
    assert converted.details == {"last_seen": "2026-05-27 12:00:00+00:00"}

    notifier = Notifier(settings("json://127.0.0.1:9/"), store.db, store.lock)
    [message] = notifier.enqueue([obj], "s-9")
    assert message.title == "[PortConsole] medium host_gone: 127.0.0.9:-/-"
    assert "\x1b" not in message.text  # network text is made inert for the message body
    assert message.document["findings"][0]["service"] == "x\x1b[31mred"  # JSON keeps it exact


# ----- retries, order, black holes --------------------------------------------------------


def test_target_down_then_up_delivers_each_message_once_in_order(
    store: Store, clock: Clock
) -> None:
    with HttpCatcher() as http:
        http.down()
        notifier = Notifier(settings(json_target(http)), store.db, store.lock, clock=clock)
        notifier.enqueue([finding(1), finding(2)], "scan-1")

        first = notifier.deliver_due()
        # Only the head message is tried: its successors must not overtake it.
        assert [(r.ok, r.finding_ids) for r in first] == [(False, ("f-1",))]
        assert "127.0.0.1" in (first[0].error or "")

        notifier.enqueue([finding(3)], "scan-2")
        assert notifier.deliver_due() == []  # backing off (1 s), nothing due yet

        http.failing()  # up but answering 500
        clock.advance(1.1)
        second = notifier.deliver_due()
        assert [(r.ok, r.attempts, r.finding_ids) for r in second] == [(False, 2, ("f-1",))]

        http.up()
        clock.advance(2.1)
        third = notifier.deliver_due()
        assert [r.ok for r in third] == [True, True, True]
        assert notifier.deliver_due() == []
        clock.advance(120)
        assert notifier.flush() == []

        delivered = [d["findings"][0]["finding_id"] for d in documents(http)]
    assert delivered == ["f-1", "f-2", "f-3"]
    assert {m["status"] for m in store.outbox()} == {DELIVERED}
    assert notifier.status()["counts"] == {PENDING: 0, DELIVERED: 3, DEAD: 0}


def test_black_hole_target_costs_at_most_its_timeout(store: Store) -> None:
    with HttpCatcher(mode="blackhole") as hole, HttpCatcher() as good:
        notifier = Notifier(
            settings(json_target(hole, timeout=0.5), json_target(good)), store.db, store.lock
        )
        notifier.enqueue([finding(1), finding(2), finding(3)], "scan-1")
        started = time.monotonic()
        results = notifier.deliver_due()
        elapsed = time.monotonic() - started
        # 0.5 s timeout; generous slack for the first apprise import on a loaded CI machine.
        assert elapsed < 2.0, elapsed
        assert len(good.accepted) == 3  # the healthy target is not held up
        assert len(hole.requests) == 1  # the stuck target stops after one try
    by_target: dict[str, list[bool]] = {}
    for result in results:
        by_target.setdefault(result.target, []).append(result.ok)
    assert sorted(by_target.values()) == [[False], [True, True, True]]


def test_no_send_starts_after_the_deadline(store: Store) -> None:
    with HttpCatcher() as http:
        notifier = Notifier(settings(json_target(http)), store.db, store.lock)
        notifier.enqueue([finding(1), finding(2)], "scan-1")
        assert notifier.deliver_due(deadline=time.monotonic() - 1) == []
        assert http.requests == []
        # The claims were released: a later call delivers both.
        assert [r.ok for r in notifier.deliver_due()] == [True, True]


def test_dead_after_max_attempts_does_not_block_later_messages(store: Store, clock: Clock) -> None:
    with HttpCatcher(mode="failing") as http:
        notifier = Notifier(
            settings(json_target(http), max_attempts=2), store.db, store.lock, clock=clock
        )
        notifier.enqueue([finding(1)], "scan-1")
        assert [r.status for r in notifier.deliver_due()] == [PENDING]
        clock.advance(1.1)
        [last] = notifier.deliver_due()
        assert (last.status, last.attempts, last.next_attempt_at) == (DEAD, 2, None)
        assert "500" in (last.error or "")

        status = notifier.status()
        assert status["counts"][DEAD] == 1
        assert [d["finding_ids"] for d in status["dead"]] == [["f-1"]]
        assert status["dead"][0]["last_error"]

        http.up()
        notifier.enqueue([finding(2)], "scan-2")
        assert [(r.ok, r.finding_ids) for r in notifier.deliver_due()] == [(True, ("f-2",))]
        # flush gives the dead message one more try; it is kept, not dropped.
        assert [(r.ok, r.finding_ids) for r in notifier.flush()] == [(True, ("f-1",))]
    assert notifier.status()["counts"] == {PENDING: 0, DELIVERED: 2, DEAD: 0}


def test_backoff_doubles_and_is_capped(store: Store, clock: Clock) -> None:
    port = free_port()
    notifier = Notifier(
        settings(
            {"url": f"json://127.0.0.1:{port}/", "timeout": 1},
            backoff_seconds=2,
            backoff_max_seconds=5,
            max_attempts=10,
        ),
        store.db,
        store.lock,
        clock=clock,
    )
    notifier.enqueue([finding(1)], "scan-1")
    delays = []
    for _ in range(4):
        [result] = notifier.deliver_due()
        assert result.next_attempt_at is not None
        from portconsole.core.timeutil import parse_iso

        delay = (parse_iso(result.next_attempt_at) - clock.now).total_seconds()
        delays.append(round(delay, 3))
        clock.advance(delay)
    assert delays == [2, 4, 5, 5]


# ----- routing, digest, rate limit --------------------------------------------------------


def test_routing_by_severity_kind_and_tag(store: Store) -> None:
    with HttpCatcher() as ops, HttpCatcher() as sec:
        notifier = Notifier(
            settings(
                json_target(ops, tags=["ops"]),
                json_target(sec, tags=["sec"]),
                routes=[
                    {"tags": ["sec"], "min_severity": "high"},
                    {"tags": ["ops"], "kinds": ["service_changed"]},
                ],
            ),
            store.db,
            store.lock,
        )
        notifier.enqueue(
            [
                finding(1, severity="critical"),  # sec only
                finding(2, severity="low"),  # nobody
                finding(3, severity="medium", kind="service_changed"),  # ops only
                finding(4, severity="high", kind="service_changed"),  # both
            ],
            "scan-1",
        )
        notifier.deliver_due()
        got_ops = [d["findings"][0]["finding_id"] for d in documents(ops)]
        got_sec = [d["findings"][0]["finding_id"] for d in documents(sec)]
    assert got_ops == ["f-3", "f-4"]
    assert got_sec == ["f-1", "f-4"]


def test_without_routes_every_target_gets_every_finding(store: Store) -> None:
    notifier = Notifier(
        settings({"url": "json://127.0.0.1:9/a", "tags": ["x"]}, "json://127.0.0.1:9/b"),
        store.db,
        store.lock,
    )
    assert notifier.route(from_finding(finding(1, severity="low"))) == [
        "json://127.0.0.1:9/a",
        "json://127.0.0.1:9/b",
    ]


def test_digest_mode_sends_one_message_per_target_per_cycle(store: Store) -> None:
    with HttpCatcher() as http:
        notifier = Notifier(settings(json_target(http), mode="digest"), store.db, store.lock)
        queued = notifier.enqueue([finding(1, severity="low"), finding(2), finding(3)], "scan-1")
        assert len(queued) == 1
        notifier.deliver_due()
        [document] = documents(http)
        envelope = http.accepted[0].json()
    assert document["type"] == "digest"
    assert document["severity"] == "high"
    assert [f["finding_id"] for f in document["findings"]] == ["f-1", "f-2", "f-3"]
    assert envelope["title"] == "[PortConsole] 3 new findings, highest high, scan scan-1"
    assert document["text"].count("\n") == 2 and "127.0.0.2:40003/tcp" in document["text"]


def test_rate_limit_holds_the_rest_for_the_next_minute(store: Store, clock: Clock) -> None:
    with HttpCatcher() as http:
        notifier = Notifier(
            settings(json_target(http), rate_limit_per_minute=2), store.db, store.lock, clock=clock
        )
        notifier.enqueue([finding(n) for n in range(1, 6)], "scan-1")
        assert len(notifier.deliver_due()) == 2
        clock.advance(30)
        assert notifier.deliver_due() == []  # still inside the minute
        clock.advance(31)
        assert len(notifier.deliver_due()) == 2
        clock.advance(61)
        assert len(notifier.deliver_due()) == 1
        ids = [d["findings"][0]["finding_id"] for d in documents(http)]
    assert ids == ["f-1", "f-2", "f-3", "f-4", "f-5"]


# ----- concurrency ------------------------------------------------------------------------


def test_two_deliverers_never_send_a_message_twice(tmp_path: Path) -> None:
    # Two Notifiers on one data dir, each with its own TinyDB and lock, as two processes are.
    with HttpCatcher() as http:
        config = settings(json_target(http))
        first, second = open_store(tmp_path), open_store(tmp_path)
        a = Notifier(config, first.db, first.lock)
        b = Notifier(config, second.db, second.lock)
        a.enqueue([finding(n) for n in range(1, 11)], "scan-1")
        barrier = threading.Barrier(2)
        outcomes: list[list[DeliveryResult]] = []

        def run(notifier: Notifier) -> None:
            barrier.wait()
            outcomes.append(notifier.deliver_due())

        threads = [threading.Thread(target=run, args=(n,)) for n in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        # Whatever one deliverer left (it may have been claimed by the other), a second round sends.
        a.deliver_due()
        ids = [d["findings"][0]["finding_id"] for d in documents(http)]
    assert ids == [f"f-{n}" for n in range(1, 11)]


def test_delivery_worker_delivers_in_the_background_and_stops(store: Store) -> None:
    with HttpCatcher() as http:
        notifier = Notifier(settings(json_target(http)), store.db, store.lock)
        stop = threading.Event()
        worker = DeliveryWorker(notifier, stop, interval=5.0)
        worker.start()
        notifier.enqueue([finding(1)], "scan-1")
        worker.wake()
        assert len(http.wait_for(1, timeout=5)) == 1
        stop.set()
        worker.join(2)
        assert not worker.is_alive()
        assert worker.last_error is None


# ----- test messages ----------------------------------------------------------------------


def test_test_reports_each_target_and_honours_the_tag(store: Store) -> None:
    with HttpCatcher() as good, HttpCatcher(mode="failing") as bad:
        notifier = Notifier(
            settings(json_target(good, tags=["ops"]), json_target(bad, tags=["sec"])),
            store.db,
            store.lock,
        )
        report = notifier.test()
        assert [(target, ok) for target, ok, _ in report] == [
            (f"json://127.0.0.1:{good.port}/hook", True),
            (f"json://127.0.0.1:{bad.port}/hook", False),
        ]
        assert report[0][2] is None and "500" in (report[1][2] or "")
        assert [t for t, _, _ in notifier.test(tag="sec")] == [f"json://127.0.0.1:{bad.port}/hook"]
        assert notifier.test(tag="nobody") == []
        document = json.loads(good.accepted[0].json()["message"])
    assert document["type"] == "test" and document["findings"] == []
    assert store.outbox() == []  # tests bypass the outbox


# ----- templates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{host} {hostname}", "{hostname}"),
        ("{host.__class__}", "{host.__class__}"),
        ("{}", "{0}"),
        ("{host", "literal braces"),
    ],
)
def test_bad_template_is_a_config_error_naming_it(store: Store, template: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Notifier(settings("json://127.0.0.1:9/", body_template=template), store.db, store.lock)
    assert "notify.body_template" in str(caught.value)
    assert needle in str(caught.value)


def test_custom_templates_render_every_documented_field(store: Store) -> None:
    template = (
        "{host}|{port}|{proto}|{service}|{severity}|{kind}|{first_seen}|{finding_id}|{scan_id}"
    )
    notifier = Notifier(
        settings("json://127.0.0.1:9/", title_template="T {finding_id}", body_template=template),
        store.db,
        store.lock,
    )
    [message] = notifier.enqueue([finding(5)], "scan-5")
    assert message.title == "T f-5"
    assert (
        message.text
        == "127.0.0.2|40005|tcp|ssh|high|unapproved_port|2026-05-27T00:00:00Z|f-5|scan-5"
    )


# ----- secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked", "hidden"),
    [
        (
            "json://user:hunter2pw@127.0.0.1:8099/hook?token=tok123456",
            "json://user:****@127.0.0.1:8099/hook?token=****",
            ["hunter2pw", "tok123456"],
        ),
        (
            "mailto://ops:s3cr%40t@127.0.0.1:2525?to=a@example.com&pass=other99",
            "mailto://ops:****@127.0.0.1:2525?to=a@example.com&pass=****",
            ["s3cr%40t", "s3cr@t", "other99"],
        ),
        (
            "discord://123456789012345678/AbCdEfGhIjKlMnOpQrStUvWx",
            "discord://****/****",
            ["123456789012345678", "AbCdEfGhIjKlMnOpQrStUvWx"],
        ),
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
            "slack://****/****/****/#general",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
        ),
        (
            "tgram://123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0/987654321",
            "tgram://****:****/****",
            ["AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"],
        ),
        (
            "jsons://hooks.example.com:8443/in/8f3a9b2c1d4e5f60718293a4b5c6?apikey=K&+X-Api-Key=zz9yy8xx7",
            "jsons://hooks.example.com:8443/in/****?apikey=****&+X-Api-Key=****",
            ["8f3a9b2c1d4e5f60718293a4b5c6", "zz9yy8xx7"],
        ),
        ("json://127.0.0.1:8099/hooks/portconsole", "json://127.0.0.1:8099/hooks/portconsole", []),
    ],
)
def test_mask_url_hides_secrets_and_keeps_host_and_port(
    url: str, masked: str, hidden: list[str]
) -> None:
    assert mask_url(url) == masked
    for secret in hidden:
        assert secret not in mask_url(url)
        assert (
            mask_text(f"error talking to {url}: {secret}", config_secrets(settings(url))).count(
                secret
            )
            == 0
        )


def test_mask_text_masks_unknown_urls_too() -> None:
    text = "failed: json://u:pw9876@127.0.0.1:9/x?token=abcdef"
    assert mask_text(text, []) == "failed: json://u:****@127.0.0.1:9/x?token=****"


def test_no_secret_appears_in_any_output_or_file(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="portconsole")
    seen: list[str] = []
    with HttpCatcher(mode="failing") as http:
        dead_smtp = free_port()
        urls: list[Any] = [
            {
                "url": f"json://alice:Pa55w0rdX@127.0.0.1:{http.port}/hook?+X-Api-Key=tok3n5ecret&token=qtok42secret",
                "timeout": 2,
            },
            {
                "url": f"mailto://bob:smtpS3cret@127.0.0.1:{dead_smtp}?to=ops@example.com&from=pc@example.com&smtp=127.0.0.1",
                "timeout": 2,
            },
            "nosuchscheme://someToken12345secret@127.0.0.1/",
        ]
        config = settings(*urls, max_attempts=1)
        secrets = ["Pa55w0rdX", "tok3n5ecret", "qtok42secret", "smtpS3cret", "someToken12345secret"]
        notifier = Notifier(
            config,
            store.db,
            store.lock,
            on_result=lambda m, r: seen.append(repr((m, r))),
            clock=clock,
        )
        notifier.enqueue([finding(1)], "scan-1")
        results = notifier.deliver_due()
        report = notifier.test()
        status = notifier.status()
        # Whatever apprise itself logs is masked before any handler sees it.
        logging.getLogger("apprise").warning("posting to %s", urls[0]["url"])
        assert "posting to json://alice:****@127.0.0.1" in caplog.text
        # The secret did reach the server (it is the credential), only there.
        assert any(r.headers.get("X-Api-Key") == "tok3n5ecret" for r in http.requests)

    assert len(results) == 3 and not any(r.ok for r in results)
    assert all(r.error for r in results) and all(not ok for _, ok, _ in report)
    outputs = [
        repr(results),
        repr(report),
        json.dumps(status),
        "\n".join(seen),
        store.path.read_text(),
        caplog.text,
        repr(notifier.targets),
        repr(notifier.messages()),
    ]
    for secret in secrets:
        for text in outputs:
            assert secret not in text
    assert set(config_secrets(config)) >= set(secrets)


def test_delivered_messages_are_dropped_after_a_day_to_keep_the_hot_file_small(
    store: Store, clock: Clock
) -> None:
    with HttpCatcher() as http:
        notifier = Notifier(settings(json_target(http)), store.db, store.lock, clock=clock)
        notifier.enqueue([finding(1)], "scan-1")
        notifier.deliver_due()
        notifier.enqueue([finding(2)], "scan-2")
        clock.advance(25 * 3600)
        notifier.deliver_due()
    assert [m["finding_ids"] for m in store.outbox()] == [["f-2"]]
    assert [m["seq"] for m in store.outbox()] == [2]


def test_a_digest_is_recorded_once_per_message_on_every_finding_it_reports(
    tmp_path: Path,
) -> None:
    """One delivery record per message, referenced by each of its findings: the digest's id
    list is never copied onto every finding (that was quadratic: 1,050 findings, 285 s)."""
    from tests.replay import replay_monitor

    network = {"127.0.0.2": {port: "http" for port in range(8000, 8030)}}
    with HttpCatcher() as http:
        url = json_target(http)["url"]
        extra = f'\n[notify]\nmode = "digest"\n[[notify.urls]]\nurl = "{url}"\ntimeout = 5\n'
        monitor, _ = replay_monitor(tmp_path, network, extra=extra)
        result = monitor.run_cycle(targets=["127.0.0.2"], ports="8000-8029")
        count = len(result.findings)
        assert count == 31  # 30 unapproved ports and the unknown host serving them
        [message] = monitor.notifier.messages()
        assert message.kind == "digest" and len(message.finding_ids) == count
        [sent] = monitor.flush_outbox(seconds=10)
        assert sent.ok
        [caught] = http.wait_for(1)
    assert len(json.loads(caught.json()["message"])["findings"]) == count
    for finding in monitor.findings_book.all():
        [record] = finding.notifications
        assert record["message_id"] == message.id and record["finding_count"] == count
        assert "finding_ids" not in record and record["ok"] and record["status"] == DELIVERED
        assert [step.text for step in finding.timeline if step.step == "notified"] == [
            f"to {message.target}"
        ]
    events = [e for e in monitor.audit.events() if e.action == "notify.attempt"]
    assert len(events) == 1 and events[0].outcome == "success"


@pytest.mark.parametrize("every", [3600.0, 0.0])
def test_outcomes_are_written_many_at_a_time_and_survive_a_failing_recorder(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, every: float
) -> None:
    """A batch's outcomes go to the outbox and to `on_result` together (written at the end, or
    every `every` seconds while sending); a recorder that fails loses no outcome (the outbox is
    written alone, then each result handed over on its own)."""
    monkeypatch.setattr(notify_module, "WRITE_EVERY_SECONDS", every)
    handed: list[str] = []

    def recorder(message: OutboxMessage, result: DeliveryResult) -> None:
        handed.append(message.id)
        if len(handed) == 2:
            raise RuntimeError("recorder broke")

    with HttpCatcher() as http:
        notifier = Notifier(settings(json_target(http)), store.db, store.lock, on_result=recorder)
        queued = notifier.enqueue([finding(n) for n in range(1, 5)], "scan-1")
        with caplog.at_level(logging.ERROR):
            results = notifier.deliver_due()
        assert len(http.wait_for(4)) == 4
    assert [r.ok for r in results] == [True] * 4
    assert {d["status"] for d in store.outbox()} == {DELIVERED}
    assert {d["claim"] for d in store.outbox()} == {None}
    ids = [m.id for m in queued]
    # the failed write's results are handed over once more, one at a time
    if every:
        assert handed == ids[:2] + ids
        assert "recording 4 notification results at once failed" in caplog.text
    else:  # written while sending: only the second is handed over twice
        assert handed == [ids[0], ids[1], ids[1], ids[2], ids[3]]
        # The first result is written alone (due at once); the next write is due once the
        # last one's time has passed again, so under load a write slower than a send holds
        # the second result with the third (and fourth): never all four, as at the end.
        failed = [r.getMessage() for r in caplog.records if "at once failed" in r.getMessage()]
        assert failed in [[f"recording {n} notification results at once failed"] for n in (1, 2, 3)]
    assert notifier.deliver_due() == []  # nothing sent twice
