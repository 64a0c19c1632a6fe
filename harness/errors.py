"""Errors a user can act on. The CLI prints them as one line and exits with 2."""


class HarnessError(Exception):
    """Bad input or configuration: message names the file, field and expectation."""


class TraceError(HarnessError):
    """A trace file that does not follow the trace format."""

    def __init__(self, path, message):
        super().__init__(f"{path}: {message}")
        self.path = path
