import json

from odoo.api import call_kw
from odoo.tests import tagged, users
from odoo.tools import json_default

from .common import EcrmCommon


def as_web_client(action):
    """The action as the browser receives it: through JSON."""
    return json.loads(json.dumps(action, default=json_default))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmScreens(EcrmCommon):
    """What the screens' buttons return works once it has travelled to the browser."""

    @users("ecrm_salesman")
    def test_segment_customers_button(self):
        """Segments > "N Customers": the action's domain survives JSON and finds them."""
        segment = self.env["ecrm.segment"].create(
            {
                "name": "Carla and co",
                "company_id": self.company_a.id,
                "domain": repr([("email", "=ilike", "carla@example.com")]),
            }
        )
        action = as_web_client(call_kw(segment.browse(), "action_preview", [segment.ids], {}))
        partners = (
            self.env[action["res_model"]].with_context(**action["context"]).search(action["domain"])
        )
        self.assertEqual(partners, self.customer)
        self.assertEqual(segment.partner_count, 1)
