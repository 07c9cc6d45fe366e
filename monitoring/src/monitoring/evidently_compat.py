"""Import Evidently through here, never directly.

Evidently 0.7.23 (the newest release) imports `pandas.core.dtypes.common.infer_dtype_from_object`,
a private pandas helper that pandas 3.1 removed, in a legacy test module every import of
`evidently` loads (`evidently.legacy.tests.data_integrity_tests`, used by its `TestColumnsType`,
which this package does not use). Until Evidently stops importing it, it is put back here, as
pandas 2 defined it for the dtype specifications pandas itself accepts, before Evidently loads.
Everything else of Evidently runs on pandas 3 as released (monitoring/tests check the reports).

Evidently also warns (Pandas4Warning) about pandas keywords pandas 4 will drop; `quiet` keeps
those out of the job's log while a report is computed.

Evidently's UI service reports usage to Evidently's telemetry endpoint unless DO_NOT_TRACK is set:
the stack sends nothing anywhere it was not told to, so it is set here (an explicit value wins).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pandas.core.dtypes.common as _dtypes_common

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("ITERATIVE_DO_NOT_TRACK", "1")

if not hasattr(_dtypes_common, "infer_dtype_from_object"):

    def infer_dtype_from_object(dtype: Any) -> type:
        """The scalar type of a dtype specification (pandas 2's helper of the same name)."""
        resolved: type = pd.api.types.pandas_dtype(dtype).type
        return resolved

    _dtypes_common.infer_dtype_from_object = infer_dtype_from_object  # type: ignore[attr-defined]


@contextmanager
def quiet() -> Iterator[None]:
    """Evidently's deprecation chatter (pandas' and its own) kept out of the log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", module=r"evidently(\.|$)")
        yield
