from odoo.tools import SQL

from . import controllers
from . import models
from . import tools
from . import wizard


def uninstall_hook(env):
    """Drop what ecrm_addon added to core tables outside the ORM's bookkeeping."""
    for column in models.res_partner.ECRM_PARTNER_INDEXED:
        env.cr.execute(
            SQL("DROP INDEX IF EXISTS %s", SQL.identifier(f"res_partner_ecrm_{column}_idx"))
        )
