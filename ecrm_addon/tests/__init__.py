from . import test_ecrm_foundation
from . import test_ecrm_interaction
from . import test_ecrm_score
from . import test_ecrm_clv_model
from . import test_ecrm_consent
from . import test_ecrm_campaign
from . import test_ecrm_api
from . import test_ecrm_api_fuzz
