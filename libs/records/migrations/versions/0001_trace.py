"""Message trace: events, per-message summaries and look-up keys, each partitioned by day.

Revision ID: 0001_trace
Revises:

- ``trace_events``: every event, keyed by (message_id, at, event_key); ``event_key`` is a digest of the
  event's content, so a batch written twice (a redelivery from the bus) adds nothing the second time.
- ``trace_messages``: one row per message (from the record that names its sender, recipients,
  Message-ID and client: ingress's RECEIVE or REJECT, a DSN's first event).
- ``trace_keys``: one row per look-up value of a message (``sender``, ``rcpt``, ``from``, ``msgid``,
  ``ip``), ordered by (value, at, message_id) so a look-up in a time range is one index range scan,
  newest first, paged by keyset.

Partitions (``<table>_pYYYYMMDD``, one per UTC day) are created ahead and dropped past retention by
``mailmoat_records.db`` (``ensure_partitions``, ``drop_partitions_before``), not here.
"""

from alembic import op

revision = "0001_trace"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE trace_events (
            at          timestamptz NOT NULL,
            message_id  text        NOT NULL,
            event       text        NOT NULL,
            service     text        NOT NULL,
            recipients  text[]      NOT NULL DEFAULT '{}',
            detail      text        NOT NULL DEFAULT '',
            data        jsonb       NOT NULL DEFAULT '{}',
            event_key   bigint      NOT NULL,
            PRIMARY KEY (message_id, at, event_key)
        ) PARTITION BY RANGE (at)
    """)
    op.execute("""
        CREATE TABLE trace_messages (
            received_at        timestamptz NOT NULL,
            message_id         text        NOT NULL,
            message_id_header  text,
            sender             text,
            recipients         text[]      NOT NULL DEFAULT '{}',
            client_ip          inet,
            PRIMARY KEY (message_id, received_at)
        ) PARTITION BY RANGE (received_at)
    """)
    op.execute("""
        CREATE TABLE trace_keys (
            value       text        NOT NULL,
            at          timestamptz NOT NULL,
            message_id  text        NOT NULL,
            kind        text        NOT NULL,
            PRIMARY KEY (value, at, message_id, kind)
        ) PARTITION BY RANGE (at)
    """)


def downgrade() -> None:
    op.execute("DROP TABLE trace_keys")
    op.execute("DROP TABLE trace_messages")
    op.execute("DROP TABLE trace_events")
