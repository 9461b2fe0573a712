from odoo.tools import SQL

from .models.res_partner import ECRM_PARTNER_INDEXED


def uninstall_hook(env):
    """Drop the interaction log and the consent history before Odoo removes the shipped
    channels.

    Interactions and consent events keep their channel (``ondelete='restrict'``) so that
    nobody deletes a channel with history by mistake; on uninstall they go anyway, in one
    statement rather than through the ORM, with the tables that reference them (the web
    events of the API's visits, its Unmatched inbox and web visitors); never CASCADE,
    which would empty any other module's table pointing at them.

    Also drop what the ORM does not know: the scoring runs' work tables and the indexes
    ecrm_addon put on res_partner's own columns.
    """
    env.cr.execute(
        SQL(
            "TRUNCATE ecrm_interaction, ecrm_interaction_event, ecrm_unmatched_event, "
            "ecrm_unmatched_event_ecrm_unmatched_match_wizard_rel, ecrm_web_visitor, "
            "ecrm_consent_event, ecrm_consent"
        )
    )
    env["ecrm.score.run"]._gc_work_tables(keep_pending=False)
    for column in ECRM_PARTNER_INDEXED:
        env.cr.execute(
            SQL("DROP INDEX IF EXISTS %s", SQL.identifier(f"res_partner_ecrm_{column}_idx"))
        )
