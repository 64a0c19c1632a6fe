"""Pure-Python reference model: the semantics the compiled kernel must match.

Written for clarity: Python objects, dicts, lists, event by event. The
differential tests require every counter of harness.core to equal this
model's on generated traces."""

from harness.reference.domain import run  # noqa: F401
