from . import ingest_validation
