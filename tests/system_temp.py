"""The system's temp folder as it was when the suite started. conftest.py moves the suite's own
inside pytest's base temp, which only the user running the tests can enter: a test whose files
another user must reach (test_makefile.py runs make as `nobody`) makes them here."""

import tempfile

SYSTEM_TEMP = tempfile.gettempdir()
