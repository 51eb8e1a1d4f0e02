"""The client library's exceptions: one root, messages that say the fix."""


class ToppipeError(Exception):
    """Root of every error toppipe raises on purpose."""


class NotDeployedError(ToppipeError):
    """The site has no connection record: it was never brought up, or is down."""


class SchedulerLostError(ToppipeError):
    """The session lost its site's scheduler (it died, or the site was taken down)."""


class RunInterruptedError(SchedulerLostError):
    """A run was cut short because its site's scheduler went away: the message says how to resume it."""


class TunnelClosedError(SchedulerLostError):
    """The client's ssh tunnel to its site is closed; the site (and its runs) may well go on."""
