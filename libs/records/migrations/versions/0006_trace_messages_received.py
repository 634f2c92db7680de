"""Message trace: an index of ``trace_messages`` by time of receipt, for listing a date range alone.

Revision ID: 0006_trace_messages_received
Revises: 0005_sender_blocks

- ``trace_messages_received`` on ``(received_at DESC, message_id DESC)``: the messages received in
  ``[since, until)``, newest first, paged by the same keyset as a look-up (``(at, message_id) <
  cursor``), are one index range scan per day partition, merged in order, stopping when the page is full
  (``TraceReader.received``; EOP's message trace of every message in a range, by status).

An index on the partitioned table is made on each day partition, and on partitions created later. Made
in the upgrade's transaction: the build holds the recorder's writes to ``trace_messages`` (reads go on)
until it ends (docs/decisions/010).
"""

from alembic import op

revision = "0006_trace_messages_received"
down_revision = "0005_sender_blocks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX trace_messages_received ON trace_messages (received_at DESC, message_id DESC)")


def downgrade() -> None:
    op.execute("DROP INDEX trace_messages_received")
