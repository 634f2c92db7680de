"""Quarantine: held messages (metadata and the original bytes, compressed) and their recipients.

Revision ID: 0002_quarantine
Revises: 0001_trace

- ``quarantine``: one row per held message, keyed by its queue id; ``data`` is the original message
  compressed (``codec``: ``zlib``), stored out of line without a second compression; ``size`` is the
  original length (the quarantine's size on /metrics). ``senders`` holds the envelope sender and the
  From addresses in lower case, for ``--sender``.
- ``quarantine_recipients``: one row per recipient (lower case; ``address`` as the envelope spells it)
  with its release state: ``held``, then ``releasing`` (claimed by a conditional update: at most one
  release per recipient; the row is the release's outbox entry until the publish is confirmed), then
  ``released``. Deleting a held message (or its expiry) deletes its rows.

Expiry deletes rows (``mailmoat_records.quarantinedb.QuarantineDB.prune``): the quarantine is small
next to the trace, and a message is kept for its own retention, not by day.
"""

from alembic import op

revision = "0002_quarantine"
down_revision = "0001_trace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE quarantine (
            qid          text        PRIMARY KEY,
            received_at  timestamptz NOT NULL,
            expires      timestamptz NOT NULL,
            reason       text        NOT NULL,
            result       text,
            detail       text        NOT NULL DEFAULT '',
            release_by   text        NOT NULL DEFAULT 'user' CHECK (release_by IN ('admin', 'user')),
            sender       text        NOT NULL,
            senders      text[]      NOT NULL DEFAULT '{}',
            recipients   text[]      NOT NULL,
            author       text        NOT NULL DEFAULT '',
            authors      text[]      NOT NULL DEFAULT '{}',
            envelope     jsonb       NOT NULL,
            verdicts     jsonb       NOT NULL DEFAULT '{}',
            size         bigint      NOT NULL,
            codec        text        NOT NULL DEFAULT 'zlib',
            data         bytea       NOT NULL
        )
    """)
    op.execute("ALTER TABLE quarantine ALTER COLUMN data SET STORAGE EXTERNAL")  # compressed already
    op.execute("CREATE INDEX quarantine_received ON quarantine (received_at, qid)")
    op.execute("CREATE INDEX quarantine_expires ON quarantine (expires)")
    op.execute("CREATE INDEX quarantine_reason ON quarantine (reason, received_at)")
    op.execute("CREATE INDEX quarantine_result ON quarantine (result, received_at) WHERE result IS NOT NULL")
    op.execute("CREATE INDEX quarantine_senders ON quarantine USING gin (senders)")
    op.execute("""
        CREATE TABLE quarantine_recipients (
            qid          text        NOT NULL REFERENCES quarantine (qid) ON DELETE CASCADE,
            recipient    text        NOT NULL,
            address      text        NOT NULL,
            received_at  timestamptz NOT NULL,
            state        text        NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'releasing', 'released')),
            released_at  timestamptz,
            released_by  text,
            role         text,
            published_at timestamptz,
            PRIMARY KEY (qid, recipient)
        )
    """)
    op.execute("CREATE INDEX quarantine_recipients_by ON quarantine_recipients (recipient, received_at)")
    op.execute("CREATE INDEX quarantine_outbox ON quarantine_recipients (released_at) WHERE state = 'releasing'")


def downgrade() -> None:
    op.execute("DROP TABLE quarantine_recipients")
    op.execute("DROP TABLE quarantine")
