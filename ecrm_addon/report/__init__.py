from . import ecrm_segment_migration
