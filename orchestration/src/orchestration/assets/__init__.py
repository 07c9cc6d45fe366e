"""The stack's assets: the ETL's tables (etl), the model (model), the batch scores (scoring)."""
