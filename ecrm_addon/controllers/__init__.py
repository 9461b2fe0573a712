from . import ecrm_consent
from . import ecrm_api
