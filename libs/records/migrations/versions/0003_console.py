"""Console: accounts, sessions and the audit log.

Revision ID: 0003_console
Revises: 0002_quarantine

- ``console_accounts``: local accounts; ``password_hash`` is an argon2id hash (PHC string), ``role``
  one of ``admin``, ``helpdesk``, ``user``; ``addresses`` (lower case) are the mailboxes an end user's
  account may see. Names are unique without regard to case.
- ``console_sessions``: server-side sessions; the cookie holds a random token, the table its SHA-256
  (a leaked table opens no session), the session's CSRF token, its absolute expiry, last use (idle
  expiry) and revocation (sign-out, a password change, an account disabled).
- ``console_audit``: who did what, when and from where (sign-in, sign-out, account changes; later
  releases, deletions and retries). ``actor_id`` is not a foreign key: the record outlives the account.
"""

from alembic import op

revision = "0003_console"
down_revision = "0002_quarantine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE console_accounts (
            id                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name                 text        NOT NULL CHECK (name <> ''),
            role                 text        NOT NULL CHECK (role IN ('admin', 'helpdesk', 'user')),
            password_hash        text        NOT NULL,
            addresses            text[]      NOT NULL DEFAULT '{}',
            disabled             boolean     NOT NULL DEFAULT false,
            created_at           timestamptz NOT NULL DEFAULT now(),
            updated_at           timestamptz NOT NULL DEFAULT now(),
            password_changed_at  timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE UNIQUE INDEX console_accounts_name ON console_accounts (lower(name))")
    op.execute("""
        CREATE TABLE console_sessions (
            token_hash  bytea       PRIMARY KEY,
            account_id  bigint      NOT NULL REFERENCES console_accounts (id) ON DELETE CASCADE,
            csrf        text        NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            last_seen   timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            revoked_at  timestamptz,
            client_ip   inet,
            user_agent  text        NOT NULL DEFAULT ''
        )
    """)
    op.execute("CREATE INDEX console_sessions_account ON console_sessions (account_id)")
    op.execute("CREATE INDEX console_sessions_expires ON console_sessions (expires_at)")
    op.execute("""
        CREATE TABLE console_audit (
            id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT now(),
            actor      text        NOT NULL,
            actor_id   bigint,
            action     text        NOT NULL,
            target     text        NOT NULL DEFAULT '',
            outcome    text        NOT NULL DEFAULT 'ok',
            detail     jsonb       NOT NULL DEFAULT '{}',
            client_ip  inet
        )
    """)
    op.execute("CREATE INDEX console_audit_at ON console_audit (at DESC, id DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE console_audit")
    op.execute("DROP TABLE console_sessions")
    op.execute("DROP TABLE console_accounts")
