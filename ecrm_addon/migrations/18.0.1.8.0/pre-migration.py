from odoo.tools import SQL


def migrate(cr, version):
    """18.0.1.8.0: a scoring run is as of a day (a date), no longer an instant.

    The runs' reference instants become their day in the company's time zone (its
    partner's, else UTC), the day the run reported itself as of (its name, its history
    period, its customers' ages). Left to the ORM, the column would be cast to its UTC
    day: a night run at 00:30 in Brussels would move to the day before.

    Converted before the ORM sees the field (pre-migration): first the values to the
    local day's midnight, then the column to a date, which the ORM then leaves alone.
    A time zone that PostgreSQL does not know is taken as UTC.
    """
    cr.execute(
        SQL(
            """SELECT data_type FROM information_schema.columns
                WHERE table_name = 'ecrm_score_run' AND column_name = 'reference_date'"""
        )
    )
    row = cr.fetchone()
    if not row or row[0] != "timestamp without time zone":
        return
    cr.execute(
        SQL(
            """
            UPDATE ecrm_score_run r
               SET reference_date = (
                       (r.reference_date AT TIME ZONE 'UTC') AT TIME ZONE COALESCE(
                           (SELECT z.name FROM pg_timezone_names z WHERE z.name = p.tz), 'UTC')
                   )::date
              FROM res_company c
              JOIN res_partner p ON p.id = c.partner_id
             WHERE c.id = r.company_id AND r.reference_date IS NOT NULL
            """
        )
    )
    cr.execute(
        SQL(
            """ALTER TABLE ecrm_score_run
               ALTER COLUMN reference_date TYPE date USING reference_date::date"""
        )
    )
