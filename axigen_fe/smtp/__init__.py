"""SMTP proxies: inbound MX routing per recipient, and authenticated submission.

Reading order for one session: L{axigen_fe.smtp.service} (listener + factory) ->
L{axigen_fe.smtp.session} (what both proxies share: greeting, EHLO, STARTTLS, limits,
timeouts) -> L{axigen_fe.smtp.inbound} or L{axigen_fe.smtp.submission} (the state
machines) -> L{axigen_fe.smtp.backend} (the SMTP client towards the back-end).
L{axigen_fe.smtp.parser}, L{axigen_fe.smtp.replies} and L{axigen_fe.smtp.datastream}
are pure functions and small value types, tested on their own.
"""
