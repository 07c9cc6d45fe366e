"""Data engineering: raw customer and sales files into `companydata`, and `feature_store`."""

from machine_learning_engineering.errors import StackError

__version__ = "0.1.0"


class EtlError(StackError):
    """An ETL command stopped; its transaction was rolled back, so nothing was changed."""


class DataError(EtlError):
    """Bad input: the message names the file, line, column or value, and nothing was changed."""


class DatabaseBusy(EtlError):
    """Other sessions held locks the ETL needs past its deadline; nothing was changed: retry later."""

    exit_code = 75  # sysexits.h EX_TEMPFAIL
