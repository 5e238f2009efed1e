"""What the data layer raises and warns for bad input: a clear one-line message, never a half-written cache."""


class DataError(ValueError):
    """Bad or unusable input data (missing table or column, unparsable values, an empty cohort ...)."""


class BadRowsWarning(UserWarning):
    """Rows of a table that the cohort cannot use as they are (an empty id ...); they are counted in the cohort's
    statistics under ``bad_rows_<table>_<column>_<problem>``."""
