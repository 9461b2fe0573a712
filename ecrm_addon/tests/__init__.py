from . import test_ecrm_foundation
