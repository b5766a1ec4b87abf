"""The embedded demo: C{twistd -n axigen-fe --demo} with no external servers.

An in-process directory (ldaptor's in-memory LDAP server), two in-process mail back-ends
(Twisted's IMAP4, POP3 and ESMTP servers over in-memory mailboxes) and a node configured
to route the demo users between them, so anyone can try the proxies in one command.
"""
