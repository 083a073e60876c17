# The DuckDB side of the query benchmark; bench-audit/src/query.rs runs it with the project's
# venv python and talks to it over stdin and stdout, one JSON object per line, so that the two
# engines can take turns run by run and meet the same conditions on a shared machine.
#
# First line in: the segment files' glob and the rules file. First line out: DuckDB's version
# and thread count. Then, for each line in ({"sql": …, "rows": true/false}), one line out:
# {"seconds": …} with the time of execute + fetch_arrow_table measured by perf_counter, and
# the result's rows when asked for (converted after the clock stopped).
#
# The result is fetched as an Arrow table, the form Portcullis' `query_with_limits` returns
# (record batches), rather than with `fetchall`: `fetchall` turns `time` (TIMESTAMP WITH TIME
# ZONE) into Python objects through `pytz`, which the project's venv does not have.
#
# `access_events` and `rules` are views, so that the SQL text is the very text Portcullis runs.
# Times become microseconds since the epoch, dates ISO text and decimals numbers, so that the
# Rust side can compare the rows value by value.

import datetime
import decimal
import json
import sys
import time

import duckdb
import pyarrow


def plain(value):
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def rows_of(table):
    columns = []
    for column in table.columns:
        if pyarrow.types.is_timestamp(column.type):
            micros = pyarrow.timestamp("us", tz=column.type.tz)
            column = column.cast(micros).cast(pyarrow.int64())
        columns.append([plain(value) for value in column.to_pylist()])
    return [list(row) for row in zip(*columns)]


def quoted(text):
    return "'" + text.replace("'", "''") + "'"


def say(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main():
    spec = json.loads(sys.stdin.readline())
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE VIEW access_events AS SELECT * FROM read_parquet("
        + quoted(spec["events_glob"])
        + ", hive_partitioning = true, hive_types = {'date': DATE})"
    )
    con.execute("CREATE VIEW rules AS SELECT * FROM read_parquet(" + quoted(spec["rules"]) + ")")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    say({"version": duckdb.__version__, "threads": threads})
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        table = con.execute(request["sql"]).fetch_arrow_table()
        reply = {"seconds": time.perf_counter() - started}
        if request.get("rows"):
            reply["rows"] = rows_of(table)
        say(reply)


if __name__ == "__main__":
    main()
