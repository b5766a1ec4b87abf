"""axigen-fe: a mail front-end cluster node (IMAP, POP3, SMTP, webmail proxies) on Twisted."""

__version__ = "0.1.0.dev0"
