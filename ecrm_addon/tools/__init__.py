from . import clv
from . import ingest_validation
