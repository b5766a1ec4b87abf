"""Networking shared by every proxy: listeners, TLS contexts, back-end connections, relay."""
