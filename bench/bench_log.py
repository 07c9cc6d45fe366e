"""What a prediction-log record costs: the ways into `predictions`, and the ids' order.

Records as the API builds them (`PredictionRecord.from_columns`), written in batches of
`--batch` to a throwaway cluster bootstrapped as the stack's:
  * formats: COPY as CSV (the writer before issue 15), as text (the writer now) and binary,
    each into the staging table followed by `INSERT ... ON CONFLICT DO NOTHING`, and straight
    into `predictions`; per record, the CPU the client spends building the batch and the
    CPU of the PostgreSQL backend (from /proc, so other processes on a shared machine do
    not count);
  * ids: `--rows` records logged first, then `--batches` more measured, with random
    (version-4) ids and with time-ordered (version-7) ones: a random id lands at a random
    place of the table's unique index;
  * batch records: a request of `--batch-rows` rows logged as ONE row of `prediction_batches`
    (`BatchRecord.from_columns`, binary COPY by `batch_copy_binary`), straight in and staged,
    with the arrays compressed by lz4 (as bootstrapped), by pglz, and stored uncompressed
    (STORAGE EXTERNAL); per prediction, the client's CPU (building the record, encoding it)
    and the PostgreSQL backend's.
Each figure is the median of `--runs` runs, with the smallest and largest.

    .venv/bin/python bench/bench_log.py        # about six minutes; writes bench/results/log.md
    .venv/bin/python bench/bench_log.py --skip-rows --out /tmp/log.md   # the batch records only, a minute
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from machine_learning_engineering.db import connect
from machine_learning_engineering.ood import IN_DISTRIBUTION
from machine_learning_engineering.prediction_log import (
    BATCH_COPY,
    BATCH_DIRECT_COPY,
    BATCH_INSERT,
    BATCH_STAGE,
    COLUMNS,
    COPY,
    DIRECT_COPY,
    INSERT,
    STAGE,
    BatchRecord,
    PredictionRecord,
    batch_copy_binary,
    copy_text,
)
from testkit import localdb

KINDS = {"attr_a": "integer", "attr_b": "category", "scd_a": "number", "scd_b": "integer"}
TICK = os.sysconf("SC_CLK_TCK")
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def records(n: int, rng: np.random.Generator) -> list[PredictionRecord]:
    columns = {
        "attr_a": rng.integers(1, 6, n).astype(float),
        "attr_b": np.array(rng.choice(list("abcd"), n), dtype=object),
        "scd_a": rng.random(n),
        "scd_b": rng.integers(1, 6, n).astype(float),
    }
    idx, labels = np.arange(n), np.zeros(n, dtype=np.int64)
    verdicts = [IN_DISTRIBUTION] * n
    return PredictionRecord.from_columns(idx, labels, rng.random(n), "v1", columns, KINDS, "key", verdicts)


def request_columns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    columns = {
        "attr_a": rng.integers(1, 6, n).astype(float),
        "attr_b": np.array(rng.choice(list("abcd"), n), dtype=object),
        "scd_a": rng.random(n),
        "scd_b": rng.integers(1, 6, n).astype(float),
    }
    return np.arange(n), rng.integers(0, 2, n), rng.random(n), columns


# The arrays' TOAST: as bootstrapped (lz4), the default pglz, and no compression at all.
STORAGE = {
    "lz4": "SET COMPRESSION lz4, ALTER COLUMN {c} SET STORAGE EXTENDED",
    "pglz": "SET COMPRESSION pglz, ALTER COLUMN {c} SET STORAGE EXTENDED",
    "uncompressed (STORAGE EXTERNAL)": "SET STORAGE EXTERNAL",
}
ARRAYS = ("client_idx", "label", "probability", "in_distribution", "features", "ood_reasons")


def write_batches(conn: Any, payloads: list[bytes], staged: bool) -> None:
    for data in payloads:
        with conn, conn.cursor() as cur:
            if staged:
                cur.execute(BATCH_STAGE)
                cur.copy_expert(BATCH_COPY, io.BytesIO(data))
                cur.execute(BATCH_INSERT)
            else:
                cur.copy_expert(BATCH_DIRECT_COPY, io.BytesIO(data))


def csv_text(batch: Sequence[PredictionRecord]) -> bytes:
    import csv

    text = io.StringIO()
    csv.writer(text).writerows(batch)
    return text.getvalue().encode()


def binary(batch: Sequence[PredictionRecord]) -> bytes:
    """PostgreSQL's binary COPY: a header, then per record its field count and each field's
    length and bytes (jsonb: a version byte, then the text)."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack("!ii", 0, 0)]
    for r in batch:
        at = (dt.datetime.fromisoformat(r.predicted_at) - EPOCH) // dt.timedelta(microseconds=1)
        version, features, key, reasons = (
            v.encode() for v in (r.model_version, r.features, r.api_key or "", r.ood_reasons or "[]")
        )
        layout = f"!hi16siqihidi{len(version)}si{len(features) + 1}si{len(key)}siqi?i{len(reasons) + 1}s"
        out.append(
            struct.pack(
                layout, 10, 16, bytes.fromhex(r.prediction_id), 8, r.client_idx, 2, r.label, 8, r.probability or 0.0,
                len(version), version, len(features) + 1, b"\x01" + features, len(key), key, 8, at,
                1, bool(r.in_distribution), len(reasons) + 1, b"\x01" + reasons,
            )
        )  # fmt: skip
    out.append(struct.pack("!h", -1))
    return b"".join(out)


FORMATS: dict[str, tuple[str, Callable[[Sequence[PredictionRecord]], bytes]]] = {
    "CSV": ("(FORMAT csv)", csv_text),
    "text": ("", copy_text),
    "binary": ("(FORMAT binary)", binary),
}


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def write(conn: Any, batches: list[bytes], staged: bool, options: str) -> None:
    for data in batches:
        with conn, conn.cursor() as cur:
            if staged:
                cur.execute(STAGE)
                cur.copy_expert(f"{COPY} {options}", io.BytesIO(data))
                cur.execute(INSERT)
            else:
                cur.copy_expert(f"{DIRECT_COPY} {options}", io.BytesIO(data))


def uuid4_ids(batch: list[PredictionRecord]) -> list[PredictionRecord]:
    return [r._replace(prediction_id=uuid.uuid4().hex) for r in batch]


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def cell2(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000, help="records per format and run")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table before the ids are measured")
    parser.add_argument("--batches", type=int, default=100, help="batches measured on top of --rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows per logged batch request")
    parser.add_argument("--batch-requests", type=int, default=20, help="batch requests per way and run")
    parser.add_argument("--skip-rows", action="store_true", help="batch records only (a quick run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/log.md"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sample = records(args.records, rng)
    chunks = [sample[i : i + args.batch] for i in range(0, len(sample), args.batch)]
    formats: dict[str, dict[str, list[float]]] = {}
    ids: dict[str, list[float]] = {"random (version 4)": [], "time-ordered (version 7)": []}
    with localdb.temporary_cluster(fast=True) as cluster:
        conn, admin = connect(cluster.settings("mle")), connect(cluster.settings("admin"))
        pid = conn.get_backend_pid()

        def truncate() -> None:
            with admin, admin.cursor() as cur:
                cur.execute("TRUNCATE predictions")

        requests = [request_columns(args.batch_rows, rng) for _ in range(args.batch_requests)]
        verdicts = [IN_DISTRIBUTION] * args.batch_rows
        n_rows = args.batch_rows * args.batch_requests
        batch_ways: dict[str, dict[str, list[float]]] = {}
        for _ in range(args.runs):
            for storage, clause in STORAGE.items():
                with admin, admin.cursor() as cur:
                    cur.execute("TRUNCATE prediction_batches")
                    cur.execute(
                        "ALTER TABLE prediction_batches "
                        + ", ".join(f"ALTER COLUMN {c} " + clause.format(c=c) for c in ARRAYS)
                    )
                for staged in (False, True):
                    started = time.process_time()
                    built = [
                        BatchRecord.from_columns(idx, labels, p, "v1", columns, KINDS, "key", verdicts)
                        for idx, labels, p, columns in requests
                    ]
                    record = (time.process_time() - started) / n_rows * 1e6
                    started = time.process_time()
                    payloads = [batch_copy_binary([r]) for r in built]
                    encode = (time.process_time() - started) / n_rows * 1e6
                    before = backend_cpu(pid)
                    write_batches(conn, payloads, staged)
                    server = (backend_cpu(pid) - before) / n_rows * 1e6
                    way = f"binary COPY {'staged, then INSERT ... ON CONFLICT' if staged else 'straight in'}, {storage}"
                    found = batch_ways.setdefault(way, {"record": [], "encode": [], "server": []})
                    found["record"].append(record)
                    found["encode"].append(encode)
                    found["server"].append(server)
            with admin, admin.cursor() as cur:
                cur.execute(
                    "ALTER TABLE prediction_batches "
                    + ", ".join(f"ALTER COLUMN {c} " + STORAGE["lz4"].format(c=c) for c in ARRAYS)
                )
                cur.execute("SELECT pg_total_relation_size('prediction_batches')")
                (size,) = cur.fetchone() or (0,)
            if args.skip_rows:
                continue
            for name, (options, build) in FORMATS.items():
                for staged in (True, False):
                    truncate()
                    started = time.process_time()
                    payloads = [build(chunk) for chunk in chunks]
                    client = (time.process_time() - started) / len(sample) * 1e6
                    before = backend_cpu(pid)
                    write(conn, payloads, staged, options)
                    server = (backend_cpu(pid) - before) / len(sample) * 1e6
                    into = (
                        "into the staging table, then INSERT ... ON CONFLICT" if staged else "straight into predictions"
                    )
                    way = f"{name} COPY {into}"
                    found = formats.setdefault(way, {"client": [], "server": []})
                    found["client"].append(client)
                    found["server"].append(server)
            for label in ids:
                truncate()
                fill = [records(args.batch, rng) for _ in range(args.rows // args.batch + args.batches)]
                if label.startswith("random"):
                    fill = [uuid4_ids(batch) for batch in fill]
                payloads = [copy_text(batch) for batch in fill]
                write(conn, payloads[: -args.batches], False, "")
                before = backend_cpu(pid)
                write(conn, payloads[-args.batches :], False, "")
                ids[label].append((backend_cpu(pid) - before) / (args.batches * args.batch) * 1e6)
        conn.close()
        admin.close()
    batch_lines = [
        f"Batch records: requests of {args.batch_rows:,} rows, each logged as one row of prediction_batches, "
        f"{args.batch_requests} requests per way; median (smallest-largest) of {args.runs} runs, µs of CPU per "
        f"prediction. ({size / n_rows:.1f} bytes per prediction on disk with lz4, table, TOAST and indexes.)",
        "",
        "| way in | building the record (client) | binary COPY data (client) | PostgreSQL backend |",
        "|---|---:|---:|---:|",
        *(
            f"| {way} | {cell2(v['record'])} | {cell2(v['encode'])} | {cell2(v['server'])} |"
            for way, v in batch_ways.items()
        ),
    ]
    if args.skip_rows:
        text = "\n".join(batch_lines)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(text)
        return 0
    lines = [
        *batch_lines,
        "",
        f"Prediction-log records ({COLUMNS}), {args.records:,} per way in batches of {args.batch:,}; "
        f"median (smallest-largest) of {args.runs} runs, µs of CPU per record.",
        "",
        "| way in | building the batch (client) | PostgreSQL backend |",
        "|---|---:|---:|",
        *(f"| {way} | {cell(v['client'])} | {cell(v['server'])} |" for way, v in formats.items()),
        "",
        f"| ids (text COPY straight in, {args.rows:,} rows in the table) | PostgreSQL backend |",
        "|---|---:|",
        *(f"| {label} | {cell(values)} |" for label, values in ids.items()),
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
