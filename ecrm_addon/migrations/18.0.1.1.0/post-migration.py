from odoo.tools import SQL


def migrate(cr, version):
    """18.0.1.1.0: the score table keeps only its unique index (see
    ecrm.customer.score; Odoo drops the column of its removed run_id), and the scoring's
    prediction work table holds float8 columns under a new name."""
    for index in (
        "ecrm_customer_score__segment_id_index",
        "ecrm_customer_score__tier_id_index",
        "ecrm_customer_score_company_clv_idx",
        # replaced by ecrm_interaction_customer_idx, which includes what the figures read
        "ecrm_interaction_commercial_company_date_idx",
    ):
        cr.execute(SQL("DROP INDEX IF EXISTS %s", SQL.identifier(index)))
    cr.execute(SQL("DROP TABLE IF EXISTS ecrm_score_result"))
    # A run caught between its predict batches lost them with the old table: start over.
    cr.execute(
        SQL(
            """UPDATE ecrm_score_run SET state = 'queued', step = NULL, progress_partner_id = 0
                WHERE state = 'running'"""
        )
    )
