from odoo.tools import SQL


def migrate(cr, version):
    """18.0.1.3.0: a scoring run aggregates, fits and predicts in one step and works in
    one result table (see ecrm.score.run): the stage and prediction tables of runs
    caught by the upgrade are dropped, and those runs start over."""
    cr.execute(
        SQL(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s",
            "^ecrm_score_(stage|prediction)_[0-9]+$",
        )
    )
    names = [name for (name,) in cr.fetchall()]
    if names:
        cr.execute(SQL("DROP TABLE IF EXISTS %s", SQL(", ").join(SQL.identifier(n) for n in names)))
    cr.execute(
        SQL(
            """UPDATE ecrm_score_run SET state = 'queued', step = NULL
                WHERE state = 'running'"""
        )
    )
