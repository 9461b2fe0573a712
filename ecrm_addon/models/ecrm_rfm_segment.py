from odoo import api, fields, models
from odoo.exceptions import ValidationError

SCORE_RANGE = range(1, 6)


class EcrmRfmSegment(models.Model):
    _name = "ecrm.rfm.segment"
    _description = "RFM Segment"
    _order = "sequence, id"

    name = fields.Char(required=True, translate=True)
    code = fields.Char(help="Technical code used by filters and ready-made segments.")
    sequence = fields.Integer(default=10, help="The first segment whose ranges match wins.")
    active = fields.Boolean(default=True)
    color = fields.Integer()
    description = fields.Text(translate=True, help="Who these customers are and what to do.")
    r_min = fields.Integer("Recency from", default=1, required=True)
    r_max = fields.Integer("Recency to", default=5, required=True)
    f_min = fields.Integer("Frequency from", default=1, required=True)
    f_max = fields.Integer("Frequency to", default=5, required=True)
    m_min = fields.Integer("Monetary from", default=1, required=True)
    m_max = fields.Integer("Monetary to", default=5, required=True)

    @api.constrains("r_min", "r_max", "f_min", "f_max", "m_min", "m_max")
    def _check_ranges(self):
        for segment in self:
            for low, high in (
                (segment.r_min, segment.r_max),
                (segment.f_min, segment.f_max),
                (segment.m_min, segment.m_max),
            ):
                if low not in SCORE_RANGE or high not in SCORE_RANGE or low > high:
                    raise ValidationError(
                        self.env._(
                            "Segment '%s': each range goes from a score to a higher or equal "
                            "score, between 1 and 5.",
                            segment.name,
                        )
                    )

    @api.model
    def _get_segment_map(self):
        """Segment id of every (R, F, M) score triple, as a 5x5x5 nested list (0: none)."""
        # The ranges read once: 125 cells times a dozen segments of record reads cost
        # more than the rest of a small run's scoring.
        ranges = [
            (segment.id, segment.r_min, segment.r_max, segment.f_min, segment.f_max,
             segment.m_min, segment.m_max)
            for segment in self.search_fetch(
                [("active", "=", True)],
                ["r_min", "r_max", "f_min", "f_max", "m_min", "m_max"],
            )
        ]  # fmt: skip
        grid = [[[0] * 5 for _f in SCORE_RANGE] for _r in SCORE_RANGE]
        for r in SCORE_RANGE:
            for f in SCORE_RANGE:
                for m in SCORE_RANGE:
                    for segment_id, r_min, r_max, f_min, f_max, m_min, m_max in ranges:
                        if r_min <= r <= r_max and f_min <= f <= f_max and m_min <= m <= m_max:
                            grid[r - 1][f - 1][m - 1] = segment_id
                            break
        return grid
