import inspect

from lxml import etree

from odoo.api import call_kw
from odoo.tests import TransactionCase, tagged

SUBVIEW_TAGS = {"list", "form", "kanban", "tree"}


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmViewButtons(TransactionCase):
    """Every button of the addon's views calls something that exists and takes the records.

    The web client calls an object button with the record ids as first argument (a list
    header button with the selected ones, or all): ``call_kw`` gives them to an ``@api.model``
    method as an extra positional argument, which fails with a TypeError in the browser only.
    """

    def _addon_views(self):
        view_ids = (
            self.env["ir.model.data"]
            .search([("module", "=", "ecrm_addon"), ("model", "=", "ir.ui.view")])
            .mapped("res_id")
        )
        return self.env["ir.ui.view"].browse(view_ids).filtered(lambda v: v.type != "qweb")

    def _buttons(self, view):
        """(model name, button element) of each button in the view's own arch."""

        def walk(node, model):
            for child in node.iterchildren(tag=etree.Element):
                child_model = model
                if child.tag == "field" and any(
                    sub.tag in SUBVIEW_TAGS for sub in child.iterchildren(tag=etree.Element)
                ):
                    field = self.env[model]._fields.get(child.get("name"))
                    child_model = field.comodel_name if field is not None else model
                if child.tag == "button":
                    yield model, child
                yield from walk(child, child_model)

        yield from walk(etree.fromstring(view.arch_db), view.model)

    def _check_object_button(self, model_name, button):
        name = button.get("name") or ""
        if name.startswith("_"):
            return f"{name} is private: the web client cannot call it"
        method = getattr(self.env[model_name], name, None)
        if not callable(method):
            return f"{model_name} has no method {name}"
        if getattr(method, "_api", None) in ("model", "model_create"):
            # call_kw passes the ids as a positional argument to @api.model methods
            try:
                inspect.signature(method).bind([1])
            except TypeError:
                return f"{model_name}.{name} is @api.model: the ids the view passes break the call"
        return None

    def test_object_buttons_name_public_record_methods(self):
        errors = []
        checked = 0
        for view in self._addon_views():
            for model_name, button in self._buttons(view):
                if model_name not in self.env:
                    errors.append(f"{view.xml_id}: a button on an unknown model {model_name}")
                    continue
                button_type = button.get("type")
                if button_type == "object":
                    error = self._check_object_button(model_name, button)
                elif button_type == "action":
                    action_ref = button.get("name") or ""
                    if action_ref.isdigit():  # %(xml_id)d, resolved at load
                        action = self.env["ir.actions.actions"].browse(int(action_ref)).exists()
                    else:
                        action = self.env.ref(action_ref, raise_if_not_found=False)
                    error = None if action else f"no action {action_ref}"
                else:
                    continue
                checked += 1
                if error:
                    errors.append(f"{view.xml_id} ({model_name}): {error}")
        self.assertGreater(checked, 20, "the views' buttons were not found")
        self.assertFalse(errors, "\n".join(errors))

    def test_recompute_now_from_the_list_header(self):
        """Scoring Runs > Recompute Now queues a full run per current company.

        Called the way the list header calls it: through call_kw, with the ids (none
        selected) as first argument.
        """
        runs = self.env["ecrm.score.run"].with_context(allowed_company_ids=self.env.company.ids)
        before = runs.search([("state", "=", "queued"), ("run_type", "=", "full")])
        call_kw(runs, "action_recompute_now", [[]], {})
        queued = runs.search([("state", "=", "queued"), ("run_type", "=", "full")]) - before
        self.assertEqual(queued.company_id, self.env.company)
