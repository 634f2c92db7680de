"""Alembic environment of the records database: raw SQL migrations, run by ``mailmoat db upgrade``.

The URL comes from the Alembic config (``mailmoat_records.db.alembic_config``). A transaction-scoped
advisory lock serialises concurrent upgrades (a k8s Job and an operator at the same time): the second
waits, then finds nothing left to do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

LOCK = 0x6D6D_7265_6364  # "mmrecd": the upgrade lock's key


def run_migrations_online() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=False)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
