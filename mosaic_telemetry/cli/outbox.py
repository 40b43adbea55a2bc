"""``mosaic-telemetry outbox``: list, show, export (read-only); requeue, purge (repair)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TextIO

from . import options
from .format import EXIT_OK, duration, hint, one_line, print_json, table, when

if TYPE_CHECKING:
    from .._store import OutboxReader, SqliteOutbox

__all__ = ["LIST_STATES", "register"]

#: What ``outbox list --status`` selects.
LIST_STATES: Final = ("pending", "leased", "dead", "spooled")
#: How many candidates an ambiguous ``outbox show`` prefix names.
_CANDIDATES: Final = 10


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``outbox list|show|export|requeue|purge`` to the command line."""
    outbox = commands.add_parser(
        "outbox", help="list, show, export (read-only); requeue, purge (repair)"
    )
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    listing = options.add_command(
        actions, "list", run_list, "pending (or dead) events, oldest first", parents=[common]
    )
    listing.add_argument("--dead", action="store_true", help="the dead letters (--status dead)")
    listing.add_argument(
        "--status",
        choices=LIST_STATES,
        help="only these: pending (not being sent), leased (being sent), dead, or spooled"
        " (in a process's spool file, not yet moved into the outbox)",
    )
    listing.add_argument(
        "--since",
        type=options.point_in_time,
        metavar="WHEN",
        help="tracked (dead: dead-lettered) at or after WHEN: 2026-11-27T00:11:02Z, 2h, 7d",
    )
    listing.add_argument(
        "--limit", type=options.non_negative, default=100, metavar="N", help="at most N (0: all)"
    )
    listing.add_argument(
        "--offset", type=options.non_negative, default=0, metavar="N", help="skip the first N"
    )
    show = options.add_command(
        actions, "show", run_show, "one event: its row and stored JSON", parents=[common]
    )
    show.add_argument("event_id", metavar="EVENT_ID", help="its id, or a unique start of it")
    export = options.add_command(
        actions, "export", run_export, "events as JSON lines on stdout", parents=[common]
    )
    export.add_argument("--dead", action="store_true", help="the dead letters instead")
    export.add_argument(
        "--format",
        choices=["jsonl", "json"],
        default="jsonl",
        help="jsonl: one event per line (default); json: one JSON list (as --json)",
    )
    requeue = options.add_command(
        actions, "requeue", run_requeue, "move dead letters back to pending", parents=[common]
    )
    requeue.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    requeue.add_argument("--all", action="store_true", help="every dead letter")
    purge = options.add_command(
        actions,
        "purge",
        run_purge,
        "delete dead letters (--dead) or every event (--all)",
        parents=[common],
    )
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--dead", action="store_true", help="the dead letters")
    which.add_argument("--all", action="store_true", help="dead and pending events")
    purge.add_argument("--yes", action="store_true", help="really delete")


# --- read-only ------------------------------------------------------------------------------
def _without_body(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "body"}


def _stored_event(body: str) -> Any:
    """The stored JSON text as a value; a text that is not JSON (never written by us) as is."""
    try:
        return json.loads(body)
    except ValueError:
        return body


def run_list(args: argparse.Namespace, out: TextIO) -> int:
    """Pending, leased or dead rows, oldest first, a page at a time."""
    if args.dead and args.status not in (None, "dead"):
        args.parser.error(f"--dead and --status {args.status} select different rows")
    state = "dead" if args.dead else args.status
    dead = state == "dead"
    reader = options.open_reader(args)
    limit = None if args.limit == 0 else args.limit
    if state == "spooled":  # a few at most: moved into the outbox every worker cycle
        every = [
            r
            for r in reader.list_spooled()
            if args.since is None or float(r["enqueued_at"]) >= args.since
        ]
        rows = every[args.offset : None if limit is None else args.offset + limit]
        where = f"beside {reader.path}"
    else:
        rows = reader.list_rows(
            dead=dead, since=args.since, in_state=state, limit=limit, offset=args.offset
        )
        where = f"in {reader.path}"
    if args.json:
        print_json(out, [_without_body(r) for r in rows])
    elif rows:
        _print_rows(out, rows, dead=dead)
    if len(rows) == limit or args.offset:
        if state == "spooled":
            total = len(every)
        else:
            total = reader.count(dead=dead, since=args.since, in_state=state)
        _page_hint(total, shown=len(rows), offset=args.offset)
    elif not rows:
        since = f" since {when(args.since)}" if args.since is not None else ""
        hint(f"no {state or 'pending'} events{since} {where}")
    return EXIT_OK


def _page_hint(total: int, *, shown: int, offset: int) -> None:
    """Where this page lies among all rows, on stderr (stdout holds the data only)."""
    last = offset + shown
    if not shown:
        hint(f"nothing after --offset {offset}: {total} in all")
    elif offset or last < total:
        if not offset:
            parts = [f"showing {shown} of {total}"]
        elif shown == 1:
            parts = [f"showing row {last} of {total}"]
        else:
            parts = [f"showing rows {offset + 1}-{last} of {total}"]
        if last < total:
            parts.append(f"--offset {last} shows the next")
            if not offset:
                parts.append("--limit 0 shows all")
        hint(*parts)


def _print_rows(out: TextIO, rows: list[dict[str, Any]], *, dead: bool) -> None:
    now = time.time()
    if dead:
        header = ["ID", "EVENT_ID", "DEAD SINCE", "ATTEMPTS", "HTTP", "REASON"]
        lines = [
            [
                str(r["id"]),
                r["event_id"],
                when(r["dead_at"]),
                str(r["attempts"]),
                str(r["http_status"] or "-"),
                one_line(str(r["reason"])),
            ]
            for r in rows
        ]
    else:
        header = ["ID", "EVENT_ID", "STATE", "AGE", "ATTEMPTS", "NOTE"]
        lines = [
            [
                str(r["id"]),
                r["event_id"],
                r["state"],
                duration(now - float(r["enqueued_at"])),
                str(r.get("attempts", 0)),  # a spooled row was never claimed
                _row_note(r, now),
            ]
            for r in rows
        ]
    table(out, header, lines)


def _row_note(row: dict[str, Any], now: float) -> str:
    if row["state"] == "spooled":
        return f"in spool {row['spool']}"
    if row["state"] == "leased":
        return (
            f"leased by pid {row['lease_pid']} on {row['lease_host']} "
            f"until {when(row['lease_expires_at'])}"
        )
    next_at = float(row["next_attempt_at"] or 0)
    return f"next attempt in {duration(next_at - now)}" if next_at > now else ""


def run_show(args: argparse.Namespace, out: TextIO) -> int:
    """One event by id or by a unique start of its id (like git), with its stored JSON."""
    reader = options.open_reader(args)
    row = reader.get_row(args.event_id) or reader.get_row(_unique_event_id(reader, args.event_id))
    if row is None:  # gone between the two reads
        raise _no_such_event(reader, args.event_id)
    event = _stored_event(row["body"])
    if args.json:
        print_json(out, {**_without_body(row), "event": event})
        return EXIT_OK
    for key, value in _without_body(row).items():
        if value is not None:
            shown = (when(value) if value else "-") if key.endswith("_at") else value
            out.write(f"{key:<17}{shown}\n")
    out.write("\n")
    print_json(out, event)
    return EXIT_OK


def _unique_event_id(reader: OutboxReader, prefix: str) -> str:
    """The one event id that starts with ``prefix``; OutboxError if none or several do."""
    from .._exceptions import OutboxError

    found = reader.event_ids_starting_with(prefix.lower(), limit=_CANDIDATES + 1) if prefix else []
    if not found:
        raise _no_such_event(reader, prefix)
    if len(found) > 1:
        more = " and more" if len(found) > _CANDIDATES else ""
        raise OutboxError(
            f"event id prefix {prefix!r} is ambiguous in {reader.path}: it starts "
            f"{', '.join(found[:_CANDIDATES])}{more}; give more characters"
        )
    return found[0]


def _no_such_event(reader: OutboxReader, event_id: str) -> Exception:
    from .._exceptions import OutboxError

    return OutboxError(f"no event {event_id} in {reader.path} (neither pending nor dead)")


def run_export(args: argparse.Namespace, out: TextIO) -> int:
    """Every pending (or dead) event as stored: JSON lines, or one JSON list with ``--json``."""
    rows = options.open_reader(args).list_rows(dead=args.dead)
    if not (args.json or args.format == "json"):
        for row in rows:
            out.write(json.dumps(_stored_event(row["body"]), separators=(",", ":")) + "\n")
        return EXIT_OK
    out.write("[")
    for n, row in enumerate(rows):
        out.write(("," if n else "") + "\n  " + json.dumps(_stored_event(row["body"])))
    out.write("\n]\n" if rows else "]\n")
    return EXIT_OK


# --- repair ---------------------------------------------------------------------------------
def _repair(reader: OutboxReader, action: Callable[[SqliteOutbox], int]) -> int:
    """Open the (validated, existing) file read-write with SqliteOutbox and run ``action``."""
    from .._store import SqliteOutbox

    meta = reader.meta()  # refuses a missing, corrupt or foreign file before we open it
    outbox = SqliteOutbox(
        reader.path,
        server_url=meta.get("server_url", ""),
        dry_run=meta.get("mode") == "dry_run",
    )
    try:
        return action(outbox)
    finally:
        outbox.close()


def run_requeue(args: argparse.Namespace, out: TextIO) -> int:
    """Dead letters back to pending, attempts reset, so the next drain sends them."""
    from .._exceptions import OutboxError

    if bool(args.event_ids) == bool(args.all):
        args.parser.error("give EVENT_ID ... or --all (one of them)")
    reader = options.open_reader(args)
    wanted: list[str] | None = None if args.all else list(dict.fromkeys(args.event_ids))
    if wanted is not None:
        dead = reader.dead_event_ids(wanted)
        unknown = [e for e in wanted if e not in dead]
        if unknown:
            raise OutboxError(
                f"not in the dead-letter table of {reader.path}: {', '.join(unknown)} "
                "(nothing was requeued)"
            )
    moved = _repair(reader, lambda outbox: outbox.requeue(wanted))
    if args.json:
        print_json(out, {"path": str(reader.path), "requeued": moved})
    else:
        out.write(f"requeued {moved} dead event(s) in {reader.path}; the next drain sends them\n")
    return EXIT_OK


def run_purge(args: argparse.Namespace, out: TextIO) -> int:
    """Delete dead letters (``--dead``) or everything (``--all``) for good."""
    reader = options.open_reader(args)
    what = "dead" if args.dead else "dead and pending"
    if not args.yes:
        count = reader.count(dead=True) + (0 if args.dead else reader.count(dead=False))
        args.parser.error(
            f"this deletes {count} {what} event(s) from {reader.path} for good; "
            "add --yes to confirm"
        )
    removed = _repair(reader, lambda outbox: outbox.purge(dead_only=args.dead))
    if args.json:
        print_json(out, {"path": str(reader.path), "purged": removed})
    else:
        out.write(f"purged {removed} {what} event(s) from {reader.path}\n")
    return EXIT_OK
