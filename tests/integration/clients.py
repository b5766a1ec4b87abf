"""Python's own mail clients, connecting from a chosen loopback address.

All of 127/8 is local on Linux: a test that connects from an address of its own can find
that address in a node's or back-end's log and know the line is its own.
"""

from __future__ import annotations

import imaplib
import poplib
import socket


class SourceIMAP4(imaplib.IMAP4):
    """imaplib connecting from C{source}."""

    def __init__(self, host: str, port: int, source: str, timeout: float = 30) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


class SourcePOP3(poplib.POP3):
    """poplib connecting from C{source}."""

    def __init__(self, host: str, port: int, source: str, timeout: float = 30) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )
