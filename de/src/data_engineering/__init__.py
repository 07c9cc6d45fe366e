"""Data engineering: raw customer and sales files into `companydata`, and `feature_store`."""

__version__ = "0.1.0"


class DataError(Exception):
    """Bad input: the message names the file, line, column or value, and nothing was changed."""
