from odoo.tools import SQL

LOG_COLUMNS = ("create_uid", "create_date", "write_uid", "write_date")


def migrate(cr, version):
    """18.0.1.5.0: the monthly score history has no create/write user and date any more
    (see ecrm.customer.score.history; ``run_id`` tells which run wrote a snapshot):
    Odoo leaves the columns of fields gone, and two of them are foreign keys checked on
    every row a snapshot inserts."""
    cr.execute(
        SQL(
            "ALTER TABLE ecrm_customer_score_history %s",
            SQL(", ").join(
                SQL("DROP COLUMN IF EXISTS %s", SQL.identifier(column)) for column in LOG_COLUMNS
            ),
        )
    )
    cr.execute(
        SQL(
            "DELETE FROM ir_model_constraint WHERE name IN %s",
            (
                "ecrm_customer_score_history_create_uid_fkey",
                "ecrm_customer_score_history_write_uid_fkey",
            ),
        )
    )
