from odoo.tools import SQL


def uninstall_hook(env):
    """Drop the interaction log before Odoo removes the shipped channels.

    Interactions keep their channel (``ondelete='restrict'``) so that nobody deletes a
    channel with history by mistake; on uninstall the whole log goes anyway, in one
    statement rather than through the ORM.
    """
    env.cr.execute(SQL("TRUNCATE ecrm_interaction, ecrm_consent_event, ecrm_consent"))
    # The scoring runs' work table is not an Odoo model: Odoo would leave it behind.
    env.cr.execute(SQL("DROP TABLE IF EXISTS ecrm_score_stage, ecrm_score_result"))
