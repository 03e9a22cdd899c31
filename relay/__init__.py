"""trackrelay: an SMTP relay proxy that adds open and click tracking."""

from relay.hookimpl import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
