from . import ecrm_api
