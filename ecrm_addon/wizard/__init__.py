from . import ecrm_unmatched_match_wizard
from . import ecrm_api_access_wizard
from . import ecrm_campaign_email_preview
from . import ecrm_api_key
from . import ecrm_api_key_show
