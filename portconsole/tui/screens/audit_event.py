"""One audit event, every field of it as stored (with the transaction's effects and
chunks when it carries them), scrollable; `y` copies it as text."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from portconsole.core.identity import Actor
from portconsole.tui.safe import clean, exact_time
from portconsole.tui.screens.document import DocumentScreen

# One line of the pretty JSON may be a long note or a banner: kept whole, it wraps.
LINE_LIMIT = 4000


def event_text(record: dict[str, Any]) -> Text:
    """A summary line, the times to the second, then the whole stored record as JSON.

    json.dumps escapes every control character, and `clean` replaces what it leaves (bidi
    overrides), so network text in details stays inert on screen and in the copy."""
    text = Text()
    seq = clean(record.get("seq"), 20)
    text.append(f"Audit event #{seq} ", style="bold")
    text.append(clean(record.get("action"), 60), style="bold")
    text.append(f" · {clean(record.get('outcome'), 20)}\n")
    actor = record.get("actor") if isinstance(record.get("actor"), dict) else {}
    origin = str(record.get("origin") or "")
    text.append(f"by {clean(Actor.from_json(actor or {}, origin=origin), 200)} ({clean(origin)})\n")
    text.append(f"at {exact_time(str(record.get('at') or ''))}")
    text.append(f", recorded {exact_time(str(record.get('recorded_at') or ''))} (UTC)\n\n")
    pretty = json.dumps(record, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    text.append("\n".join(clean(line, LINE_LIMIT) for line in pretty.splitlines()))
    return text


class AuditEventScreen(DocumentScreen):
    """Pushed over the audit log (enter on an event); `esc` returns."""

    TITLE_TEXT = "Audit event"

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__()
        self.record = record
        self.what = f"audit event #{clean(record.get('seq'), 20)}"

    def document(self) -> Text | None:
        return event_text(self.record)
