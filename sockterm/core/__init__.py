"""The pipeline: filter -> namespaces -> engine -> report."""

from .pipeline import Report, Request, SocktermError, execute

__all__ = ["Report", "Request", "SocktermError", "execute"]
