from odoo.tools import SQL

LOG_COLUMNS = ("create_uid", "create_date", "write_uid", "write_date")


def migrate(cr, version):
    """18.0.1.4.0: customer scores have no create/write user and date any more (see
    ecrm.customer.score): Odoo leaves the columns of fields gone, and two of them are
    foreign keys checked on every nightly update. Runs of the current scores left at
    the publish step score again (see ecrm.score.run._step_publish)."""
    cr.execute(
        SQL(
            "ALTER TABLE ecrm_customer_score %s",
            SQL(", ").join(SQL("DROP COLUMN IF EXISTS %s", SQL.identifier(c)) for c in LOG_COLUMNS),
        )
    )
    cr.execute(
        SQL(
            "DELETE FROM ir_model_constraint WHERE name IN %s",
            ("ecrm_customer_score_create_uid_fkey", "ecrm_customer_score_write_uid_fkey"),
        )
    )
