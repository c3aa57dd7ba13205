"""The words of an approval that the shells need before any record is loaded (a parser's
choices, `--help`): kept apart from approval.py so that building the CLI's parser imports
no record types."""

from __future__ import annotations

from typing import Literal, get_args

# keep: still needed as it is; change: still in force, but a change was asked for (the
# review says which, the change itself is a new request); retire: no longer needed.
ReviewOutcome = Literal["keep", "change", "retire"]
REVIEW_OUTCOMES: tuple[str, ...] = get_args(ReviewOutcome)
