"""The one error type the installer sees: a plain message, never a traceback."""


class ProvisionError(Exception):
    """Something the installer can fix; str(e) says what and how."""
