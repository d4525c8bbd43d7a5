"""The errors of weight loading: one base class, WeightsError, and what went wrong."""


class WeightsError(ValueError):
    """A weights file that cannot be loaded into this model."""


class WeightsFileError(WeightsError):
    """The file is not a weights file we can read (not HDF5, truncated, unknown layout)."""


class WeightsMismatchError(WeightsError):
    """The file is readable but does not fit the model (no layer matched, or shapes differ)."""
