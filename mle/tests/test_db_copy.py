"""Binary COPY both ways (machine_learning_engineering.db: copy_out, copy_in), against the real
PostgreSQL: every supported type and NULL, odd text, the values PostgreSQL itself returns, and
streams that are not what they claim to be refused with a message that says where."""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest

from machine_learning_engineering import db
from testkit.fixtures import TestDatabase

TEXTS = ["a", "", "tab\there", "line\nbreak", "back\\slash", '"quoted", comma', "ünïcödé ✓", "\\N", "x" * 5_000]


@pytest.fixture
def odd(companydata: TestDatabase) -> TestDatabase:
    """A table with a column of each decoded type, NULLs in every nullable one, odd values."""
    companydata.query(
        "CREATE TABLE public.odd (i2 smallint, i4 integer, i8 bigint NOT NULL, f4 real, f8 double precision,"
        " t text, v varchar(20), c char(3), b boolean)"
    )
    rows = []
    for i in range(1_000):
        rows.append(
            (
                None if i % 7 == 0 else (-1) ** i * i,
                None if i % 5 == 0 else -(2**31) if i == 1 else 2**31 - 1 if i == 2 else i * 1_000,
                -(2**63) if i == 3 else 2**63 - 1 if i == 4 else i,
                None if i % 11 == 0 else i / 3,
                None if i % 13 == 0 else [0.1, -0.0, float("inf"), float("-inf"), float("nan"), 1e-310][i % 6],
                None if i % 3 == 0 else TEXTS[i % len(TEXTS)],
                None if i % 4 == 0 else TEXTS[i % 2],
                None if i % 6 == 0 else "ab",
                None if i % 9 == 0 else i % 2 == 0,
            )
        )
    conn = db.connect(companydata.settings())
    try:
        with conn, conn.cursor() as cur:
            for row in rows:
                cur.execute("INSERT INTO public.odd VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", row)
    finally:
        conn.close()
    return companydata


def same(got: np.ndarray, expected: list[object], dtype: str) -> None:
    if dtype == "object":
        assert got.dtype == object and got.tolist() == expected
    else:
        want = np.array([np.nan if v is None else v for v in expected], dtype=dtype)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)  # NaN equal to NaN, -0.0 to 0.0 ...
        assert (np.signbit(got) == np.signbit(want)).all()  # ... so the sign bit separately


def test_copy_out_gives_what_the_rows_hold(odd: TestDatabase) -> None:
    query = "SELECT * FROM public.odd ORDER BY i8"
    expected = dict(
        zip(
            ["i2", "i4", "i8", "f4", "f8", "t", "v", "c", "b"],
            map(list, zip(*odd.query(query), strict=True)),
            strict=True,
        )
    )
    conn = db.connect(odd.settings())
    try:
        with conn.cursor() as cur:
            types = db.describe(cur, query)
            assert types == {"i2": db.INT2, "i4": db.INT4, "i8": db.INT8, "f4": db.FLOAT4, "f8": db.FLOAT8,
                             "t": db.TEXT, "v": db.VARCHAR, "c": db.BPCHAR, "b": db.BOOL}  # fmt: skip
            columns = db.copy_out(cur, query)
            assert set(db.copy_out(cur, query, types)) == set(columns)
    finally:
        conn.close()
    # Integers with a NULL come as float64 with NaN (as pandas reads them), without as int64.
    same(columns["i2"], expected["i2"], "float64")
    same(columns["i4"], expected["i4"], "float64")
    same(columns["i8"], expected["i8"], "int64")
    assert columns["i8"][0] == -(2**63) and columns["i8"][-1] == 2**63 - 1
    same(columns["f4"], [None if v is None else float(np.float32(v)) for v in expected["f4"]], "float64")
    same(columns["f8"], expected["f8"], "float64")
    for name in ("t", "v", "c"):
        same(columns[name], expected[name], "object")
    same(columns["b"], expected["b"], "object")
    assert {type(v) for v in columns["t"]} == {str, type(None)}


def test_copy_out_without_nulls_keeps_integers_and_booleans(companydata: TestDatabase) -> None:
    conn = db.connect(companydata.settings())
    try:
        with conn.cursor() as cur:
            columns = db.copy_out(cur, "SELECT g AS i, g % 2 = 0 AS b, 'x' || g AS t FROM generate_series(1, 5) AS g")
            empty = db.copy_out(cur, "SELECT g AS i, 'x' AS t FROM generate_series(1, 0) AS g")
    finally:
        conn.close()
    assert columns["i"].dtype == np.int64 and columns["i"].tolist() == [1, 2, 3, 4, 5]
    assert columns["b"].dtype == bool and columns["b"].tolist() == [False, True, False, True, False]
    assert columns["t"].tolist() == ["x1", "x2", "x3", "x4", "x5"]
    assert len(empty["i"]) == len(empty["t"]) == 0


def test_text_decodes_row_by_row_when_two_values_share_a_hash() -> None:
    """The hash groups rows only if their bytes are equal too: a collision decodes every row."""
    stream = np.frombuffer(b"".join([b"PGCOPY\n\xff\r\n\x00", b"\0" * 8]
                                    + [b"\x00\x01" + len(t).to_bytes(4, "big") + t for t in (b"ab", b"cd", b"ab")]
                                    + [b"\xff\xff"]), dtype=np.uint8)  # fmt: skip
    stream.flags.writeable = False
    walk, _ = db._walker()
    rows, error, _, starts, lengths, hashed = walk(stream, 19, np.zeros(1, np.int64), np.zeros(1, np.int64), 1, 3)
    assert (rows, error) == (3, 0)
    collided = hashed[0, :3].copy()
    collided[1] = collided[0]  # as if "cd" hashed like "ab"
    out = db._texts(stream, starts[0, :3], lengths[0, :3], collided, np.zeros(3, bool), db._walker()[1], "utf-8")
    assert out.tolist() == ["ab", "cd", "ab"]


def test_copy_in_writes_what_the_columns_hold(companydata: TestDatabase) -> None:
    companydata.query(
        "CREATE TABLE public.target (d date, i2 smallint, i4 integer, i8 bigint, f8 double precision,"
        " t text, b boolean, extra text DEFAULT 'default')"
    )
    n = 1_000
    idx = np.arange(n, dtype=np.int64) * 3_000_000_000
    flags = idx % 2 == 0
    columns = {
        "d": db.CopyColumn("date", datetime.date(2026, 3, 4)),
        "i2": db.CopyColumn("int2", (np.arange(n) % 30_000).astype(np.int64), null=np.arange(n) % 10 == 0),
        "i4": db.CopyColumn("int4", np.arange(n) - 500),
        "i8": db.CopyColumn("int8", idx),
        "f8": db.CopyColumn("float8", np.linspace(-1, 1, n), null=np.arange(n) % 7 == 0),
        "t": db.CopyColumn("text", "20261126T010851.307130Z ✓"),
        "b": db.CopyColumn("bool", flags, null=np.arange(n) % 3 == 0),
    }
    conn = db.connect(companydata.settings())
    try:
        with conn, conn.cursor() as cur:
            assert db.copy_in(cur, "target", columns, n) == n
    finally:
        conn.close()
    rows = companydata.query("SELECT * FROM public.target ORDER BY i4")
    got = dict(zip(["d", "i2", "i4", "i8", "f8", "t", "b", "extra"], map(list, zip(*rows, strict=True)), strict=True))
    assert set(got["d"]) == {datetime.date(2026, 3, 4)} and set(got["extra"]) == {"default"}
    assert got["i4"] == list(range(-500, 500))
    assert got["i8"] == idx.tolist()
    assert got["i2"] == [None if i % 10 == 0 else i % 30_000 for i in range(n)]
    assert got["f8"] == [None if i % 7 == 0 else v for i, v in enumerate(np.linspace(-1, 1, n).tolist())]
    assert set(got["t"]) == {"20261126T010851.307130Z ✓"}
    assert got["b"] == [None if i % 3 == 0 else bool(f) for i, f in enumerate(flags)]


def test_copy_in_of_no_rows_writes_none(companydata: TestDatabase) -> None:
    companydata.query("CREATE TABLE public.target (i integer)")
    conn = db.connect(companydata.settings())
    try:
        with conn, conn.cursor() as cur:
            assert db.copy_in(cur, "target", {"i": db.CopyColumn("int4", np.zeros(0, np.int64))}, 0) == 0
    finally:
        conn.close()
    assert companydata.query("SELECT count(*) FROM public.target") == [(0,)]


TWO_TEXTS = np.array(["a", "b"], dtype=object)


@pytest.mark.parametrize(
    ("columns", "rows", "message"),
    [
        ({"t": db.CopyColumn("text", TWO_TEXTS)}, 2, "column t: text takes one value for every row"),
        ({"i": db.CopyColumn("int4", np.arange(3))}, 2, "column i: 3 values for 2 rows"),
        (
            {"i": db.CopyColumn("int4", np.arange(2), null=np.zeros(3, bool))},
            2,
            r"a NULL mask of shape \(3,\) for 2 rows",
        ),
        ({"j": db.CopyColumn("jsonb", np.arange(2))}, 2, "column j: type 'jsonb' is not one of bool, int2"),
    ],
)
def test_encode_refuses_what_it_cannot_write(columns: dict[str, db.CopyColumn], rows: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        db.encode_binary(columns, rows)


def stream(*tuples: bytes, trailer: bool = True) -> bytes:
    return b"PGCOPY\n\xff\r\n\x00" + b"\0" * 8 + b"".join(tuples) + (b"\xff\xff" if trailer else b"")


INT4_ONE = b"\x00\x01" + b"\x00\x00\x00\x04" + b"\x00\x00\x00\x07"


@pytest.mark.parametrize(
    ("data", "types", "message"),
    [
        (b"COPY 1\n", {"i": db.INT4}, "not a binary COPY stream"),
        (stream(INT4_ONE, trailer=False), {"i": db.INT4}, r"the stream ends early at byte \d+ \(tuple 2\)"),
        (
            stream(INT4_ONE, INT4_ONE[:-2], trailer=False),
            {"i": db.INT4},
            r"the stream ends early at byte \d+ \(tuple 2\)",
        ),
        (stream(INT4_ONE), {"i": db.INT4, "j": db.INT4}, "a tuple with another number of fields at byte 19 .tuple 1."),
        (stream(INT4_ONE), {"i": db.INT8}, "a value of another size at byte 25 .tuple 1."),
        (stream(INT4_ONE), {"i": 3802}, r"cannot decode column\(s\) i \(type oid 3802\): cast them in the query"),
    ],
)
def test_decode_refuses_a_stream_that_is_not_what_it_claims(data: bytes, types: dict[str, int], message: str) -> None:
    with pytest.raises(db.CopyFormatError, match=message):
        db.decode_binary(data, types)


def test_copy_out_reads_the_role_s_tables_only(companydata: TestDatabase) -> None:
    """COPY is no way around privileges: mle_user reads no data table with it either."""
    companydata.query("CREATE TABLE public.secret (i integer)")
    conn = db.connect(companydata.settings("mle"))
    try:
        with conn.cursor() as cur, pytest.raises(Exception, match="permission denied for table secret"):
            db.copy_out(cur, "SELECT i FROM public.secret", {"i": db.INT4})
        conn.rollback()
        with conn.cursor() as cur:
            cur.copy_expert("COPY (SELECT 1) TO STDOUT", io.BytesIO())  # COPY itself is allowed
    finally:
        conn.close()
