"""jobs.log_tail: the last lines a job logged (its progress messages and its log records),
written with each heartbeat, so a page can show more than the job's last message.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 05:30:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('log_tail', sa.Text(), nullable=True))  # O(1) on SQLite and PostgreSQL


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('log_tail')
