"""The one exception the data layer raises for bad input: a clear one-line message, never a half-written cache."""


class DataError(ValueError):
    """Bad or unusable input data (missing table or column, unparsable values, an empty cohort ...)."""
