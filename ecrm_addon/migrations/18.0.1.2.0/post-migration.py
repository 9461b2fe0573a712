from odoo.tools import SQL


def migrate(cr, version):
    """18.0.1.2.0: each scoring run works in tables of its own (see ecrm.score.run) and
    publishes in customer order, and the score's model outputs are double precision
    (Odoo converts the columns)."""
    cr.execute(SQL("DROP TABLE IF EXISTS ecrm_score_stage, ecrm_score_prediction"))
    # Runs now publish in customer order: put the scores in that order once (they stay
    # in it, updated in place).
    cr.execute(SQL("CLUSTER ecrm_customer_score USING ecrm_customer_score_partner_company_uniq"))
    # A run caught between two steps lost its work with the shared tables: start over.
    cr.execute(
        SQL(
            """UPDATE ecrm_score_run SET state = 'queued', step = NULL
                WHERE state = 'running'"""
        )
    )
