"""Sync core: count the images whose values did not fit their typed columns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from syncer.migrations.support import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ims.sync_runs ADD COLUMN unfit integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN ims.sync_runs.unfit IS
  'Images of this pass with a value that could not be typed (NULL in its column, kept in raw).';
COMMENT ON COLUMN ims.partitions.watermark IS
  'Delta listings start at watermark - delta_overlap: the start of the last COMPLETE pass '
  '(in the API''s clock where known, minus a skew margin), never beyond now().';
"""

DOWNGRADE = """
ALTER TABLE ims.sync_runs DROP COLUMN unfit;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
