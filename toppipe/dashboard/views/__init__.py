"""The dashboard's pages: each has ``layout(...)`` (the skeleton, static ids) and plain
functions that build its content, called by :mod:`toppipe.dashboard.callbacks` and by tests."""
