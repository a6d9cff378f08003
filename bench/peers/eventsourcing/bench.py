"""The Python `eventsourcing` side of keel's durable-append benchmark (bench/src/durable.rs).

An event-sourced counter aggregate saved by an `eventsourcing` Application on SQLite
(the library's own recorder: WAL journal, SQLite's default `synchronous=FULL`, which the
script reads back and reports). Two cases, each for `--seconds` per run, each run in a
fresh database file under `--dir`:

- single: one event per `app.save()`, so one event per commit;
- batched: `--batch` events triggered on the aggregate, then one `app.save()`: one commit.

Usage: python bench.py --dir DIR [--seconds S] [--batch B] [--runs R]
Prints one JSON object on stdout: versions, pragmas, and events per second of each run.
"""

import argparse
import json
import os
import sqlite3
import sys
import time
from importlib.metadata import version

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Counter(Aggregate):
    """The aggregate: one small event per increment, like keel's benchmark event."""

    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self, by: int, sku: str) -> None:
        self.count += by


def open_app(path: str) -> Application:
    return Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}
    )


def pragmas(app: Application) -> dict:
    """The journal mode and synchronous level of the connections the recorder uses."""
    datastore = app.recorder.datastore  # type: ignore[attr-defined]
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
    return {"synchronous": synchronous, "journal_mode": journal_mode}


def run_single(path: str, seconds: float) -> tuple[float, dict]:
    app = open_app(path)
    counter = Counter()
    app.save(counter)
    events = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        counter.increment(by=1, sku="abc-123")
        app.save(counter)
        events += 1
    rate = events / (time.perf_counter() - started)
    return rate, pragmas(app)


def run_batched(path: str, seconds: float, batch: int) -> float:
    app = open_app(path)
    counter = Counter()
    app.save(counter)
    events = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(batch):
            counter.increment(by=1, sku="abc-123")
        app.save(counter)
        events += batch
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    single, batched, seen = [], [], {}
    for run in range(args.runs):
        rate, seen = run_single(os.path.join(args.dir, f"es-single-{run}.db"), args.seconds)
        single.append(rate)
        print(f"  eventsourcing single: {rate:.0f} events/s", file=sys.stderr)
        rate = run_batched(
            os.path.join(args.dir, f"es-batched-{run}.db"), args.seconds, args.batch
        )
        batched.append(rate)
        print(f"  eventsourcing batched: {rate:.0f} events/s", file=sys.stderr)
    print(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "eventsourcing": version("eventsourcing"),
                "sqlite": sqlite3.sqlite_version,
                "batch": args.batch,
                "pragmas": seen,
                "single": single,
                "batched": batched,
            }
        )
    )


if __name__ == "__main__":
    main()
