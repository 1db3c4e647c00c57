"""``council records``: the latest exchanges in the memory store, newest first, with filters and paging.

    council records                         # the 20 newest exchanges
    council records --failed --since 2026-11-30 --user alice --limit 50
    council records --after rec_…           # the next page: older than that record
    council records --json                  # one ExchangeRecord JSON object per line

The same data as ``GET /v1/records`` on a running server; this reads the state directory directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from council.core.config import Settings
from council.core.errors import CouncilError
from council.core.exitcodes import FAILURE, OK, USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="council records", description="List recent exchanges, newest first.")
    parser.add_argument("--failed", action="store_true", help="Only failures (low confidence, thumbs down, "
                        "rating <= 2, corrected): what the next night will learn from.")
    parser.add_argument("--since", help="Only exchanges from this UTC date or date-time on, e.g. 2026-11-30.")
    parser.add_argument("--user", help="Only this user's exchanges (the request's 'user' or x-council-user).")
    parser.add_argument("--limit", type=int, default=20, help="Most records shown, 1-100 (default: %(default)s).")
    parser.add_argument("--after", help="Record id: show records older than it (the next page).")
    parser.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")
    return parser


def _row(record) -> str:  # noqa: ANN001 - ExchangeRecord
    feedback = record.feedback
    mark = "ok " if record.success else "FAIL"
    note = f" | corrected: {feedback.correction[:40]}" if feedback and feedback.correction else ""
    query = record.query.replace("\n", " ")[:48]
    return f"{record.created_at:%Y-%m-%d %H:%M} {record.id} {mark} {record.confidence:.2f}  {query}{note}\n"


def cli(argv: list[str], settings: Settings) -> int:
    """Print a page of records; exit 0, 2 for bad flags, 1 when the store cannot be read."""
    args = _parser().parse_args(argv)
    if not 1 <= args.limit <= 100:
        sys.stderr.write("council records: --limit must be from 1 to 100\n")
        return USAGE
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            sys.stderr.write(f"council records: --since {args.since!r} is not an ISO date, e.g. 2026-11-30\n")
            return USAGE
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
    from council.memory.store import MemoryStore

    try:
        store = MemoryStore.open(settings.paths.memory, index=False)  # a listing never searches
        try:
            records, more = store.page(args.limit, args.after, False if args.failed else None, since, args.user)
        finally:
            store.close()
    except CouncilError as exc:
        sys.stderr.write(f"council records: {exc.message}\n")
        return FAILURE
    if args.json:
        sys.stdout.writelines(json.dumps(record.to_dict()) + "\n" for record in records)
        return OK
    if not records:
        sys.stdout.write(f"no records match in {settings.paths.memory}\n")
        return OK
    sys.stdout.writelines(_row(record) for record in records)
    if more:
        sys.stdout.write(f"more: council records --after {records[-1].id}\n")
    return OK
