from odoo.tools import SQL


def uninstall_hook(env):
    """Drop the interaction log before Odoo removes the shipped channels.

    Interactions keep their channel (``ondelete='restrict'``) so that nobody deletes a
    channel with history by mistake; on uninstall the whole log goes anyway, in one
    statement rather than through the ORM.
    """
    env.cr.execute(SQL("TRUNCATE ecrm_interaction"))
