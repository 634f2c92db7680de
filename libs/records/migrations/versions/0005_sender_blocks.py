"""Blocked senders added from the console (EOP's Tenant Allow/Block List entries made from the quarantine).

Revision ID: 0005_sender_blocks
Revises: 0004_quarantine_notifications

- ``sender_blocks``: one row per blocked address (``kind`` ``sender``) or domain (``kind`` ``domain``, its
  subdomains included), lower case, until ``expires_at``; who added it, from which held message, when. The
  antispam stage reads the entries not expired (``mailmoat_records.senderblocks``) and treats them as the
  policy's ``antispam.blocked_senders`` / ``blocked_domains``. Expired rows are deleted by the console.
"""

from alembic import op

revision = "0005_sender_blocks"
down_revision = "0004_quarantine_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE sender_blocks (
            id          bigserial   PRIMARY KEY,
            kind        text        NOT NULL CHECK (kind IN ('sender', 'domain')),
            value       text        NOT NULL CHECK (value = lower(value) AND length(value) BETWEEN 1 AND 320),
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            created_by  text        NOT NULL,
            qid         text,
            note        text        NOT NULL DEFAULT '',
            UNIQUE (kind, value)
        )
    """)
    op.execute("CREATE INDEX sender_blocks_expires ON sender_blocks (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE sender_blocks")
