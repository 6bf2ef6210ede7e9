"""The dataset error type, in its own module so that every dataset module can raise it without
importing the reader (which imports them)."""


class DatasetError(ValueError):
    """A dataset on disk is missing or malformed; the message names the file and the fix."""
