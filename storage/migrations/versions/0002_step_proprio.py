"""steps.proprio and the ``refine`` job kind: a judged episode's frames and proprioception
can re-train the steps-to-go head from the database (core/worker/refine_from_labels.py). ``proprio`` is
nullable: episodes written before it have none and that job skips them, with the count said.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 23:55:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_KINDS = "kind IN ('demos', 'sft', 'practice', 'eval')"
NEW_KINDS = "kind IN ('demos', 'sft', 'practice', 'eval', 'refine')"


def upgrade() -> None:
    op.add_column('steps', sa.Column('proprio', sa.JSON(), nullable=True))  # O(1) on SQLite and PostgreSQL
    # A CHECK constraint cannot be altered in place on SQLite: batch mode copies the (small) jobs table.
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_constraint(op.f('ck_jobs_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_jobs_kind'), sa.text(NEW_KINDS))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_constraint(op.f('ck_jobs_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_jobs_kind'), sa.text(OLD_KINDS))
    op.drop_column('steps', 'proprio')
