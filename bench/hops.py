"""Where the slow messages of the last bench run spent their time: every hop, from the trace in PostgreSQL.

    .venv/bin/python bench/hops.py                      # the last 1,000 messages slower than 100 ms
    .venv/bin/python bench/hops.py --last 600 --over 50

Reads the bench's records database (``BENCH_DATABASE_URL``, default the bench's ``mailmoat_bench``, which
``bench/run.sh`` leaves in place after a run). Per message: the time from ingress's RECEIVE to the connection
filter's event, from there to antivirus's, antispam's and routing's, and from routing's to egress's DELIVER,
in ms, and the whole of it; the messages numbered in the order they arrived. Slow messages that arrived in
the same second in every hop at once point at something outside the stages (the machine, the broker, the
collector); one slow hop at the stage of that hop.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg

DATABASE = "postgresql://postgres@127.0.0.1:5432/mailmoat_bench"
HOPS = ("connection_filter", "antivirus", "antispam", "routing", "egress")

QUERY = """
WITH m AS (
  SELECT message_id,
    max(at) FILTER (WHERE service = 'ingress' AND event = 'RECEIVE') AS received,
    max(at) FILTER (WHERE service = 'connection_filter') AS connection_filter,
    max(at) FILTER (WHERE service = 'antivirus') AS antivirus,
    max(at) FILTER (WHERE service = 'antispam') AS antispam,
    max(at) FILTER (WHERE service = 'routing') AS routing,
    max(at) FILTER (WHERE service = 'egress' AND event = 'DELIVER') AS egress
  FROM trace_events GROUP BY message_id),
n AS (SELECT *, row_number() OVER (ORDER BY received) AS k, count(*) OVER () AS total FROM m
      WHERE received IS NOT NULL)
SELECT k, received, connection_filter, antivirus, antispam, routing, egress FROM n
WHERE k > total - %(last)s AND egress IS NOT NULL
  AND extract(epoch FROM egress - received) * 1000 > %(over)s
ORDER BY k
"""


def ms(later, earlier) -> str:
    return "-" if later is None or earlier is None else f"{(later - earlier).total_seconds() * 1000:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--last", type=int, default=1000, help="look at the last N messages received")
    parser.add_argument("--over", type=float, default=100.0, help="show those slower than this, ms")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DATABASE)
    try:
        with psycopg.connect(url) as conn:
            rows = conn.execute(QUERY, {"last": args.last, "over": args.over}).fetchall()
    except psycopg.Error as exc:
        print(f"hops: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{'#':>6} {'received':>12} " + " ".join(f"{h[:8]:>8}" for h in HOPS) + f" {'total':>7}")
    for k, received, *stages in rows:
        previous, cells = received, []
        for at in stages:
            cells.append(ms(at, previous))
            previous = at if at is not None else previous
        print(f"{k:>6} {received.strftime('%H:%M:%S.%f')[:-3]:>12} " + " ".join(f"{c:>8}" for c in cells)
              + f" {ms(stages[-1], received):>7}")
    print(f"{len(rows)} of the last {args.last} messages took more than {args.over:g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
