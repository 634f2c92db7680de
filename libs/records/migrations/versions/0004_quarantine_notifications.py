"""Quarantine notifications: the last digest per recipient, release requests, the links' signing key.

Revision ID: 0004_quarantine_notifications
Revises: 0003_console

- ``console_digests``: one row per recipient (lower case) who was sent a quarantine digest:
  ``covered_until`` is the end of the span the last digest covered (the next lists what was held after
  it; none: from the start), ``sent_at`` when it went (the next is due
  ``quarantine.notifications.every_hours`` later).
  ``pending_id`` / ``pending_until``: a digest claimed and not yet marked sent (its queue id and the end of
  its span), the outbox entry a round that died leaves for the next one, which sends it again under the
  same queue id (egress delivers a queue id to a recipient once).
- ``console_release_requests``: a recipient asked, through a digest's link, for the release of a message
  only an administrator may release; deleted with the held message.
- ``console_keys``: secrets the console makes for itself (``links``: the key signing the digests' links),
  shared by its replicas; delete the row to void every link sent.
"""

from alembic import op

revision = "0004_quarantine_notifications"
down_revision = "0003_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE console_digests (
            recipient      text        PRIMARY KEY,
            covered_until  timestamptz,
            sent_at        timestamptz,
            digest_id      text,
            messages       integer     NOT NULL DEFAULT 0,
            pending_id     text,
            pending_until  timestamptz
        )
    """)
    op.execute("""
        CREATE TABLE console_release_requests (
            qid           text        NOT NULL REFERENCES quarantine (qid) ON DELETE CASCADE,
            recipient     text        NOT NULL,
            requested_at  timestamptz NOT NULL DEFAULT now(),
            client_ip     inet,
            PRIMARY KEY (qid, recipient)
        )
    """)
    op.execute("CREATE INDEX console_release_requests_at ON console_release_requests (requested_at DESC)")
    op.execute("""
        CREATE TABLE console_keys (
            name        text        PRIMARY KEY,
            secret      bytea       NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE console_keys")
    op.execute("DROP TABLE console_release_requests")
    op.execute("DROP TABLE console_digests")
