from . import ecrm_demo
from . import res_config_settings
