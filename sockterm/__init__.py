"""sockterm: find sockets anywhere on a host, and forcefully terminate the ones you name."""

__version__ = "0.1.0"
