"""observation method and edited flag

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 06:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('method', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('edited', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_column('edited')
        batch_op.drop_column('method')
