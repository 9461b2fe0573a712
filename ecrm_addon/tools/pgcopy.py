"""Columns between PostgreSQL and numpy with binary COPY.

The scoring moves every customer of a company through Python once (to fit the models
and predict): fetching rows as Python tuples and writing them back as text costs more
than the SQL around it (measured at 50,000 customers: 1.15 s per batch with
``fetchall`` and a text COPY, against a few tens of milliseconds here). PostgreSQL's
binary COPY format for fixed-size, non-NULL columns is a fixed-size record per row, so
numpy reads and writes it without a loop.

Format (https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.4): an 11-byte
signature, a 32-bit flags field and a 32-bit header extension length; per row a 16-bit
field count and, per field, a 32-bit length followed by the value in network byte order
(-1 and no value for NULL); a 16-bit -1 ends the data.

Supported types, each with a fixed size:

- ``int4``, ``int8``, ``float8``;
- ``date``: days since 2000-01-01 as int32 (PostgreSQL's own binary date);
- ``timestamp`` (without time zone): microseconds since 2000-01-01 as int64;
- ``numeric``: int64 amounts in units of 10^-scale (``("numeric", scale)``), written as
  a fixed number of base-10000 digit groups (PostgreSQL strips the leading and trailing
  zero groups it receives: ``numeric_recv``); NaN is written for ``NUMERIC_NAN``
  (``NAN_UNITS``);
- ``("text", width)``: byte strings of exactly ``width`` bytes (numpy ``S<width>``), into
  text or varchar columns.
"""

import datetime
import io

import numpy as np

from odoo.tools import SQL

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
# numpy dtype of each fixed-size PostgreSQL type, in network byte order.
TYPES = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "date": ">i4", "timestamp": ">i8"}
POSTGRES_EPOCH = datetime.date(2000, 1, 1)
# numeric: sign words of numeric_recv, integer digit groups (amounts below 10^16 units
# of the currency), and the marker of a NaN amount.
NUMERIC_POS, NUMERIC_NEG, NUMERIC_NAN = 0x0000, 0x4000, 0xC000
NUMERIC_INT_GROUPS = 4
NAN_UNITS = np.iinfo(np.int64).min


def _type_key(pg_type):
    return pg_type if isinstance(pg_type, str) else pg_type[0]


def _numeric_groups(scale):
    return NUMERIC_INT_GROUPS + (scale + 3) // 4


def _value_dtype(pg_type):
    kind = _type_key(pg_type)
    if kind == "numeric":
        groups = _numeric_groups(pg_type[1])
        return np.dtype(
            [("n", ">i2"), ("w", ">i2"), ("s", ">u2"), ("d", ">u2"), ("g", ">i2", (groups,))]
        )
    if kind == "text":
        return np.dtype(f"S{pg_type[1]}")
    return np.dtype(TYPES[kind])


def _row_dtype(types, nulls=()):
    """The record of a row of ``types``; the fields numbered in ``nulls`` are NULL (a
    length of -1 and no value)."""
    fields = [("count", ">i2")]
    for index, pg_type in enumerate(types):
        fields.append((f"len{index}", ">i4"))
        if index not in nulls:
            fields.append((f"val{index}", _value_dtype(pg_type)))
    return np.dtype(fields)


def date_to_days(day):
    """A date as the int32 of PostgreSQL's binary format."""
    return (day - POSTGRES_EPOCH).days


def int_array(values):
    """``values`` (integers: a list, set or numpy array) as an SQL ``int4[]``, sent as
    one array literal. psycopg2 renders a list as ``ARRAY[...]`` of one constant per
    element, each adapted in turn and parsed by PostgreSQL: 3.7 ms for 1,000 ids and
    28 ms for 10,000 (an incremental run's customers at 1,000,000), against 0.6 and
    3.6 ms for the literal."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return SQL("%s::int4[]", "{%s}" % ",".join(map(str, map(int, values))))


def copy_out(cr, query, types):
    """Run ``query`` (an ``SQL`` selecting columns of the fixed-size ``types``: int4,
    int8, float8, date, timestamp, never NULL) and return one numpy array per column."""
    buffer = io.BytesIO()
    statement = SQL("COPY (%s) TO STDOUT WITH (FORMAT binary)", query)
    cr.copy_expert(cr.mogrify(statement.code, statement.params).decode(), buffer)
    data = buffer.getbuffer()
    if bytes(data[: len(SIGNATURE)]) != SIGNATURE or bytes(data[-len(TRAILER) :]) != TRAILER:
        raise ValueError("not a PostgreSQL binary COPY stream")
    dtype = _row_dtype(types)
    body = data[len(HEADER) : -len(TRAILER)]
    if len(body) % dtype.itemsize:
        raise ValueError("binary COPY rows are not of the expected types, or hold a NULL")
    rows = np.frombuffer(body, dtype=dtype)
    sizes = [np.dtype(TYPES[pg_type]).itemsize for pg_type in types]
    if len(rows) and not (
        (rows["count"] == len(types)).all()
        and all((rows[f"len{i}"] == size).all() for i, size in enumerate(sizes))
    ):
        raise ValueError("binary COPY rows are not of the expected types, or hold a NULL")
    columns = [
        rows[f"val{index}"].astype(TYPES[pg_type][1:]) for index, pg_type in enumerate(types)
    ]
    del rows, body, data
    buffer.close()
    return columns


def numeric_units(values, scale):
    """Amounts rounded to ``scale`` decimals, as int64 units for a numeric column (NaN
    and infinities: ``NAN_UNITS``)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    units = np.rint(np.where(finite, values, 0.0) * 10.0**scale)
    if np.any(np.abs(units) >= min(10.0 ** (4 * NUMERIC_INT_GROUPS + scale), 2.0**62)):
        raise ValueError("amount too large for the scoring's numeric columns")
    return np.where(finite, units.astype(np.int64), NAN_UNITS)


def _encode_numeric(target, units, scale):
    """Fill the structured array ``target`` (n, w, s, d, g) from int64 ``units``."""
    frac_groups = (scale + 3) // 4
    nan = units == NAN_UNITS
    magnitude = np.abs(np.where(nan, 0, units))
    integer, fraction = np.divmod(magnitude, 10**scale)
    fraction = fraction * 10 ** (4 * frac_groups - scale)  # left-aligned in its groups
    count = len(units)
    target["n"] = np.full(count, NUMERIC_INT_GROUPS + frac_groups, dtype=">i2")
    target["w"] = np.full(count, NUMERIC_INT_GROUPS - 1, dtype=">i2")
    target["s"] = np.where(nan, NUMERIC_NAN, np.where(units < 0, NUMERIC_NEG, NUMERIC_POS))
    target["d"] = np.full(count, scale, dtype=">u2")
    groups = target["g"]
    for index in range(NUMERIC_INT_GROUPS - 1, -1, -1):
        integer, groups[:, index] = np.divmod(integer, 10000)
    for index in range(frac_groups - 1, -1, -1):
        fraction, groups[:, NUMERIC_INT_GROUPS + index] = np.divmod(fraction, 10000)


class _Reader:
    """The COPY data (header, records, trailer) read in slices, without joining them
    into one more copy of the records: the file that ``copy_expert`` reads."""

    def __init__(self, *parts):
        self._parts = [memoryview(part) for part in parts]
        self._offset = 0

    # a file's read, not a model's
    def read(self, size=-1):  # pylint: disable=method-required-super
        while self._parts:
            part = self._parts[0]
            if self._offset < len(part):
                end = len(part) if size is None or size < 0 else self._offset + size
                chunk = bytes(part[self._offset : end])
                self._offset += len(chunk)
                return chunk
            self._parts.pop(0)
            self._offset = 0
        return b""


class CopyIn:
    """Batches of rows appended to ``table`` with one binary COPY each.

    ``columns`` is a list of (column name, type): ``int4``, ``int8``, ``float8`` (NaN
    is stored as NaN), ``date`` (int32 days since 2000-01-01), ``("numeric", scale)``
    (int64 units from ``numeric_units``) or ``("text", width)`` (byte strings).

    ``nulls`` maps column names to the value written as NULL: ``0`` (int4, int8) or
    ``"nan"`` (float8 NaN, numeric ``NAN_UNITS``). Rows with NULLs are written as
    records of their own layout, grouped by which columns are NULL (the table's order
    of rows is not kept). Writing NULLs spares the statements reading the table a
    ``NULLIF`` per value, which cost an update of every score a tenth of its time.

    The record buffer of rows without NULL is kept from one batch to the next:
    allocating fresh memory for every batch cost more than encoding it.
    """

    def __init__(self, table, columns, nulls=None):
        self.table = table
        self.names = [name for name, _type in columns]
        self.types = [pg_type for _name, pg_type in columns]
        self.nulls = {self.names.index(name): value for name, value in (nulls or {}).items()}
        self.dtype = _row_dtype(self.types)
        self._buffer = np.empty(0, dtype=self.dtype)

    def append(self, cr, arrays, table=None, freeze=False):
        """Append one row per element of the ``arrays`` (one per column, equal lengths)
        to ``table`` (default: the writer's).

        ``freeze``: COPY ... FREEZE, into a table created in the cursor's transaction;
        once committed, its rows are visible to every transaction, even older ones.
        """
        count = len(arrays[0])
        masks = {
            index: mask
            for index, value in self.nulls.items()
            if (mask := self._null_mask(self.types[index], arrays[index], value)).any()
        }
        if not masks:
            parts = [self._records(arrays, count)]
        else:
            # One group of records per combination of NULL columns, rows in their order.
            keys = np.zeros(count, dtype=np.int64)
            for bit, mask in enumerate(masks.values()):
                keys |= mask.astype(np.int64) << bit
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            parts = []
            for start, end in zip(starts, [*starts[1:], count], strict=True):
                members = order[start:end]
                nulls = {index for bit, index in enumerate(masks) if keys[start] >> bit & 1}
                picked = [values if index in nulls else np.asarray(values)[members]
                          for index, values in enumerate(arrays)]  # fmt: skip
                parts.append(self._records(picked, len(members), nulls))
        statement = SQL(
            "COPY %s (%s) FROM STDIN WITH (FORMAT binary%s)",
            table if isinstance(table, SQL) else SQL.identifier(table or self.table),
            SQL(", ").join(SQL.identifier(name) for name in self.names),
            SQL(", FREEZE") if freeze else SQL(),
        )
        reader = _Reader(HEADER, *(records.view(np.uint8) for records in parts), TRAILER)
        cr.copy_expert(statement.code, reader, size=1 << 20)

    @staticmethod
    def _null_mask(pg_type, values, value):
        values = np.asarray(values)
        if value != "nan":
            return values == value
        if _type_key(pg_type) == "numeric":
            return values == NAN_UNITS
        return np.isnan(values)

    def _records(self, arrays, count, nulls=frozenset()):
        """The records of ``count`` rows of ``arrays``, the columns in ``nulls`` NULL."""
        if nulls:
            rows = np.empty(count, dtype=_row_dtype(self.types, nulls))
            self._fill_lengths(rows, nulls)
        else:
            if len(self._buffer) < count:
                self._buffer = np.empty(count, dtype=self.dtype)
                self._fill_lengths(self._buffer)
            rows = self._buffer[:count]
        for index, (pg_type, values) in enumerate(zip(self.types, arrays, strict=True)):
            if index in nulls:
                continue
            if _type_key(pg_type) == "numeric":
                _encode_numeric(rows[f"val{index}"], np.asarray(values, dtype=np.int64), pg_type[1])
            else:
                rows[f"val{index}"] = values
        return rows

    def _fill_lengths(self, rows, nulls=frozenset()):
        # (whole arrays: numpy assigns a scalar to a field of a wide record slowly)
        count = len(rows)
        rows["count"] = np.full(count, len(self.types), dtype=">i2")
        for index in range(len(self.types)):
            size = -1 if index in nulls else rows.dtype[f"val{index}"].itemsize
            rows[f"len{index}"] = np.full(count, size, dtype=">i4")
