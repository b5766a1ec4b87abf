"""The IMAP proxy: pre-auth state machine, back-end login replay, relay."""
