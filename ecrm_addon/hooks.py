from odoo.tools import SQL

from .models.res_partner import ECRM_PARTNER_INDEXED


def uninstall_hook(env):
    """Drop the interaction log before Odoo removes the shipped channels.

    Interactions keep their channel (``ondelete='restrict'``) so that nobody deletes a
    channel with history by mistake; on uninstall the whole log goes anyway, in one
    statement rather than through the ORM, with the tables that reference it (the web
    events of the API's visits, its Unmatched inbox and web visitors); never CASCADE,
    which would empty any other module's table pointing at them.

    Also drop the indexes ecrm_addon put on res_partner's own columns (the ORM does not
    know them).
    """
    env.cr.execute(
        SQL(
            "TRUNCATE ecrm_interaction, ecrm_interaction_event, ecrm_unmatched_event, "
            "ecrm_unmatched_event_ecrm_unmatched_match_wizard_rel, ecrm_web_visitor"
        )
    )
    for column in ECRM_PARTNER_INDEXED:
        env.cr.execute(
            SQL("DROP INDEX IF EXISTS %s", SQL.identifier(f"res_partner_ecrm_{column}_idx"))
        )
