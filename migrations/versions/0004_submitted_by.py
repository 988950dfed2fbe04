"""Who submitted each job: the name of the API token the request carried (NULL when authentication is off).

Revision ID: 0004_submitted_by
Revises: 0003
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_submitted_by"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: adding it rewrites no row, whatever the size of the table.
    op.execute("ALTER TABLE jobs ADD COLUMN submitted_by text")
    op.execute(
        "COMMENT ON COLUMN jobs.submitted_by IS "
        "'The name of the API token that submitted the job (API_TOKEN is default); NULL without authentication.'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN submitted_by")
