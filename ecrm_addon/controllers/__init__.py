from . import ecrm_consent
