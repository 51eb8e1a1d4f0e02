"""deploy: provision a toppipe site from its inventory.

Only ``deploy.__main__`` turns exceptions into exit codes; everything else
raises a subclass of :class:`DeployError`.
"""


class DeployError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = 1


class UserError(DeployError):
    """Bad input from the user: an inventory, a flag, a port in use.

    The message is one line that names the file, key or host and the fix.
    """

    exit_code = 2
