from . import test_ecrm_foundation
from . import test_ecrm_interaction
from . import test_ecrm_api
from . import test_ecrm_api_fuzz
