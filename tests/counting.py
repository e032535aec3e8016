"""The counting backend, now in :mod:`gpumlp.testing` (importable by the scripts too);
the tests' ``from counting import ...`` keeps working through this module."""
from gpumlp.testing import TALLY, VIEWS, CountingArray, CountingBackend, Tally

__all__ = ["TALLY", "VIEWS", "CountingArray", "CountingBackend", "Tally"]
