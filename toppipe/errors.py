"""The client library's exceptions: one root, messages that say the fix."""


class ToppipeError(Exception):
    """Root of every error toppipe raises on purpose."""


class NotDeployedError(ToppipeError):
    """The site has no connection record: it was never brought up, or is down."""
