"""The console over a big store: tables draw only the rows on screen (issue 15.5).

A real store with 3,000 hosts x 4 open ports and 3,000 open findings, the real console
under Pilot at 80x24: every host and finding is in its table, but only the rows drawn were
built; moving, sorting and filtering keep it that way and keep the cursor on its key.
"""

from __future__ import annotations

import gc
from datetime import datetime, timedelta
from pathlib import Path

from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.store import Store
from portconsole.core.domain.finding import FindingCandidate
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.monitor import Monitor
from portconsole.core.settings import RetentionSettings
from portconsole.core.timeutil import utcnow
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.safe import short_time
from portconsole.tui.widgets import KeyedTable, LazyRows
from tests.tui.conftest import screen_text, settle, type_text, wait_for

HOSTS = 3000
PORTS = (22, 80, 443, 8080)
# More than fit on one screen, far fewer than the table holds.
DRAWN_AT_MOST = 60


def address(index: int) -> str:
    return f"127.{40 + index // 250}.{index // 250 % 250}.{1 + index % 250}"


def sweep(scan_id: str, at: datetime, count: int) -> ScanResult:
    """A daemon's sweep that finished at `at`: `count` hosts, each with PORTS open."""
    hosts = [
        HostObservation(
            address(i), "up", "", [PortObservation(p, "tcp", "open", "http") for p in PORTS]
        )
        for i in range(count)
    ]
    return ScanResult(
        scan_id=scan_id,
        started_at=at - timedelta(seconds=30),
        finished_at=at,
        nmap_version="7.93",
        scan_type="syn",
        privileged=True,
        targets=["127.40.0.0/14"],
        addresses=[h.address for h in hosts],
        ports=",".join(str(p) for p in PORTS),
        protocols=["tcp"],
        hosts=hosts,
        origin="daemon",
    )


def big_store(data_dir: Path, count: int = HOSTS) -> None:
    at = utcnow() - timedelta(hours=1)
    scan = sweep("scale-seed", at, count)
    hosts = scan.hosts
    store = Store(data_dir, RetentionSettings())
    store.ingest(scan)
    book = FindingBook(store.hot, store.lock)
    book.ingest_candidates(
        [
            FindingCandidate("unapproved_port", h.address, 8080, "tcp", "http", "medium", "x")
            for h in hosts
        ],
        at,
    )


def built(table: KeyedTable) -> int:
    rows = table._rows
    assert isinstance(rows, LazyRows)
    return len(rows._built)


async def test_big_tables_build_only_the_rows_on_screen(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n', encoding="utf-8")
    big_store(tmp_path / "data")
    monitor = Monitor.open(config, tmp_path / "data", origin="tui")
    try:
        app = PortConsoleApp(monitor, schedule=False)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#hosts", KeyedTable)
            assert await wait_for(pilot, lambda: table.row_count == HOSTS, timeout=60)
            await settle(pilot)
            assert 0 < built(table) <= DRAWN_AT_MOST
            assert address(0) in screen_text(app)
            # The read ran with the collector off and froze what it read; it is back on.
            assert gc.isenabled() and gc.get_freeze_count() > 0
            # To the bottom and back: the cursor follows, still only drawn rows are built.
            await pilot.press("G")
            await pilot.pause()
            assert table.selected_key == table.keys[-1]
            assert table.keys[-1] in screen_text(app)
            await pilot.press("g", "j", "j")
            await pilot.pause()
            assert table.selected_key == table.keys[2]
            assert built(table) <= 2 * DRAWN_AT_MOST
            # Sorting by a column reads the hosts, not their cells; the cursor keeps its key.
            chosen = table.selected_key
            await pilot.press("o", "o", "O")  # by address, descending
            await pilot.pause()
            assert table.keys[0] == address(HOSTS - 1) and table.selected_key == chosen
            assert built(table) <= 3 * DRAWN_AT_MOST
            # The filter searches every host without building their rows.
            await pilot.press("slash")
            await type_text(pilot, address(1234))
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: table.keys == [address(1234)])
            # The triage queue: every open finding, one screen of rows built.
            await pilot.press("escape", "2")
            findings = app.screen.query_one("#findings", KeyedTable)
            assert await wait_for(pilot, lambda: findings.row_count == HOSTS, timeout=30)
            await pilot.pause()
            assert 0 < built(findings) <= DRAWN_AT_MOST
            assert "unapproved_port" in screen_text(app)
    finally:
        monitor.close()


async def test_mouse_sorts_by_header_and_opens_a_row(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n', encoding="utf-8")
    big_store(tmp_path / "data", 30)
    monitor = Monitor.open(config, tmp_path / "data", origin="tui")
    try:
        app = PortConsoleApp(monitor, schedule=False)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#hosts", KeyedTable)
            assert await wait_for(pilot, lambda: table.row_count == 30)
            await pilot.click("#hosts", offset=(6, 0))  # the Address header
            await pilot.click("#hosts", offset=(6, 0))  # again: reversed
            await pilot.pause()
            assert table.sort_column == 1 and table.sort_descending
            assert table.keys[0] == address(29) and "Address \N{BLACK DOWN-POINTING TRIANGLE}" in (
                screen_text(app)
            )
            # The cursor kept its row (now the last); back to the top, then a click on the
            # third row moves the cursor there.
            assert table.selected_key == address(0)
            await pilot.press("g")
            await pilot.click("#hosts", offset=(6, 3))
            await pilot.pause()
            assert table.selected_key == address(27)
            await pilot.click("#hosts", offset=(6, 3))  # on the cursor's row: opens it
            await settle(pilot)
            assert f"{address(27)} ·" in screen_text(app)
    finally:
        monitor.close()


async def test_a_replaced_snapshot_is_freed_in_a_thread_and_shared_findings_stay(
    tmp_path: Path,
) -> None:
    """Another process's scan sees every host again: the console's next snapshot knows each
    finding's newer sighting (no copies of the findings: the book's shared ones keep their
    stored value), and the replaced snapshot is emptied off the UI thread while the tables
    show the new."""
    count = 300
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n', encoding="utf-8")
    big_store(tmp_path / "data", count)
    monitor = Monitor.open(config, tmp_path / "data", origin="tui")
    try:
        app = PortConsoleApp(monitor, schedule=False)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#hosts", KeyedTable)
            assert await wait_for(pilot, lambda: table.row_count == count, timeout=60)
            await settle(pilot)
            first = app.snapshot
            assert first is not None and len(first.findings) == count
            stored = {f.id: f.last_seen for f in monitor.findings_book.shared_open()}
            later = utcnow()
            Store(tmp_path / "data", RetentionSettings()).ingest(sweep("scale-again", later, count))
            app.action_reload()
            assert await wait_for(pilot, lambda: app.snapshot is not first, timeout=30)
            await settle(pilot)
            assert first.findings == [] and first.hosts == [] and not first.findings_by_id
            assert table.row_count == count and address(0) in screen_text(app)
            shown = app.snapshot.findings
            assert len(shown) == count
            assert {app.snapshot.last_seen(f) for f in shown} == {later}
            assert {f.id: f.last_seen for f in shown} == stored  # as written, not copied
            again = {f.id: f.last_seen for f in monitor.findings_book.shared_open()}
            assert again == stored and later not in again.values()
            await pilot.press("2")
            await settle(pilot)
            assert f"last {short_time(later)}" in screen_text(app)  # the detail pane's
    finally:
        monitor.close()


async def test_a_big_table_sorts_and_filters_in_a_thread_in_the_same_order() -> None:
    """Past BIG_TABLE rows, sorting and filtering run in a thread (sorted a run at a time and
    merged): the order is what one stable sort gives, and until it lands the table keeps
    showing the rows it had."""
    from rich.text import Text
    from textual.app import App, ComposeResult

    from portconsole.tui.widgets.table_model import BIG_TABLE, Filtered

    count = BIG_TABLE + 5001
    sources = {f"row{i:06d}": (f"name{(i * 7919) % 1000:03d}", (i * 31) % 97) for i in range(count)}

    def build(source: tuple[str, int]) -> list[Text]:
        return [Text(source[0]), Text(str(source[1]))]

    rows = LazyRows(sources, build, search=lambda s: s[0], sort_values={"n": lambda s: s[1] % 7})

    class Big(App[None]):
        def compose(self) -> ComposeResult:
            yield KeyedTable([("name", "Name", 10), ("n", "N", 6)], id="big")

    app = Big()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one("#big", KeyedTable)
        table.sync(rows)  # the screen's own order: at once
        assert table.keys == list(sources)
        table.sort_by(1)
        assert table.keys == list(sources)  # until the thread's order lands
        await settle(pilot)
        assert table.keys == sorted(sources, key=lambda k: sources[k][1] % 7)
        table.sort_by(1, descending=True)
        await settle(pilot)
        assert table.keys == sorted(sources, key=lambda k: sources[k][1] % 7)[::-1]
        table.sort_by(None)
        table.sync(Filtered(rows, "name042"))
        await settle(pilot)
        assert table.keys == [k for k, s in sources.items() if "name042" in s[0]]
        assert 0 < table.row_count < count and "name042" in screen_text(app)
