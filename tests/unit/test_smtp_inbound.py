"""Inbound SMTP state machine: routing per recipient, pipelining, streaming DATA, limits."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from axigen_fe.config.model import TLSMode
from axigen_fe.smtp.session import HOLD_BUFFER
from axigen_fe.usermap.interface import LookupResult
from tests.unit.test_smtp_support import Client, Script, captured_log, smtp_config

MAIL = b"MAIL FROM:<sender@remote.test>\r\n"


def transaction(client: Client, *rcpts: bytes) -> list[bytes]:
    client.ehlo()
    data = MAIL + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in rcpts)
    return client.codes(data)


# ---------------------------------------------------------------- greeting, EHLO


def test_greeting_and_ehlo_list_only_what_the_node_does() -> None:
    c = Client()
    assert c.greeting == b"220 mx.example.com ESMTP ready\r\n"
    assert c.ehlo() == (
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"
        b"250 ENHANCEDSTATUSCODES\r\n"
    )


def test_ehlo_offers_starttls_only_when_the_listener_has_it_and_it_is_off() -> None:
    c = Client(listener_tls=TLSMode.STARTTLS)
    assert b"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n" in c.ehlo()
    assert c.send(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert c.transport.tls_started_with == "server-tls-options"
    assert b"STARTTLS" not in c.ehlo()
    assert c.send(b"STARTTLS\r\n").startswith(b"554 5.5.1")


def test_implicit_tls_listener_never_offers_starttls() -> None:
    c = Client(listener_tls=TLSMode.IMPLICIT)
    assert b"STARTTLS" not in c.ehlo()
    assert c.send(b"STARTTLS\r\n").startswith(b"554 5.5.1")


def test_helo_works_and_mail_parameters_then_need_ehlo() -> None:
    c = Client()
    assert c.send(b"HELO client.example.net\r\n") == b"250 mx.example.com\r\n"
    assert c.send(b"MAIL FROM:<a@b.test> SIZE=10\r\n").startswith(b"555 5.5.4")
    assert c.send(MAIL) == b"250 2.1.0 Ok\r\n"


def test_helo_without_a_name_is_a_syntax_error() -> None:
    c = Client()
    assert c.send(b"EHLO\r\n").startswith(b"501 5.5.4")


# ---------------------------------------------------------------- sequence and syntax


def test_commands_out_of_order_get_503() -> None:
    c = Client()
    assert c.send(MAIL).startswith(b"503 5.5.1")
    c.ehlo()
    assert c.send(b"RCPT TO:<alice@example.com>\r\n").startswith(b"503 5.5.1")
    assert c.send(b"DATA\r\n").startswith(b"503 5.5.1")
    assert c.send(MAIL) == b"250 2.1.0 Ok\r\n"
    assert c.send(MAIL).startswith(b"503 5.5.1 Error: nested MAIL")


def test_unknown_command_and_bad_syntax() -> None:
    c = Client()
    c.ehlo()
    assert c.send(b"FROB\r\n").startswith(b"500 5.5.2")
    assert c.send(b"1234\r\n").startswith(b"500 5.5.2")
    assert c.send(b"MAIL FROM:sender@remote.test\r\n").startswith(b"501 5.5.4")
    assert c.send(b"MAIL TO:<a@b.test>\r\n").startswith(b"501 5.5.4")
    assert c.send(b"AUTH PLAIN\r\n").startswith(b"502 5.5.1")


def test_noop_vrfy_help_rset_quit() -> None:
    c = Client()
    assert c.send(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    assert c.send(b"VRFY alice\r\n").startswith(b"252 2.5.0")
    assert c.send(b"HELP\r\n").startswith(b"214 2.0.0")
    assert c.send(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    assert c.send(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert c.transport.disconnecting


def test_size_parameter_over_the_limit_is_refused_at_mail() -> None:
    c = Client()
    c.ehlo()
    assert c.send(b"MAIL FROM:<a@b.test> SIZE=100001\r\n").startswith(b"552 5.3.4")
    assert c.send(b"MAIL FROM:<a@b.test> SIZE=100000 BODY=8BITMIME\r\n") == b"250 2.1.0 Ok\r\n"


# ---------------------------------------------------------------- routing


def test_foreign_domain_is_relay_denied_without_a_lookup() -> None:
    c = Client()
    assert transaction(c, b"victim@elsewhere.test") == [
        b"250 2.1.0 Ok",
        b"550 5.7.1 Relaying denied",
    ]
    assert c.map.lookups == []
    assert c.backends() == []


def test_wildcard_domain_covers_subdomains_only() -> None:
    c = Client()
    codes = transaction(c, b"dan@sub.example.org", b"x@example.org")
    assert codes[1] == b"250 2.1.5 Ok"
    assert codes[2] == b"550 5.7.1 Relaying denied"
    assert [(s.host, s.port) for s in c.backends()] == [("10.0.0.2", 2525)]  # port from the map


def test_lookup_is_made_without_a_password() -> None:
    c = Client()
    transaction(c, b"alice@example.com")
    assert c.map.lookups == [("alice@example.com", None)]


def test_unknown_user_550_511_and_tempfail_451_443() -> None:
    c = Client()
    assert transaction(c, b"nobody@example.com")[1].startswith(b"550 5.1.1")
    c.map.outage = "ldap down"
    assert c.send(b"RCPT TO:<alice@example.com>\r\n").startswith(b"451 4.4.3")
    assert c.backends() == []


def test_first_accepted_recipient_opens_the_backend_session() -> None:
    with captured_log() as log:
        c = Client()
        codes = transaction(c, b"alice@example.com")
    assert codes == [b"250 2.1.0 Ok", b"250 2.1.5 Ok"]
    (mta,) = c.backends()
    assert (mta.host, mta.port) == ("10.0.0.1", 25)
    assert mta.commands[0] == b"EHLO mx.example.com"
    assert mta.commands[1] == (
        b"XCLIENT ADDR=192.0.2.7 PORT=4321 NAME=[UNAVAILABLE] PROTO=ESMTP HELO=client.example.net"
    )
    assert mta.commands[2:] == [
        b"EHLO client.example.net",
        b"MAIL FROM:<sender@remote.test>",
        b"RCPT TO:<alice@example.com>",
    ]
    text = "\n".join(log)
    assert "rcpt <alice@example.com> from <sender@remote.test>: accepted" in text
    assert (
        "rcpt <alice@example.com> from <sender@remote.test>: accepted (250 2.1.5 Ok)"
        " back-end 10.0.0.1:25, session opened (client address via XCLIENT)"
    ) in text


def test_known_backend_gets_xclient_right_after_its_greeting() -> None:
    c = Client(cache_capabilities=True)
    transaction(c, b"alice@example.com")
    c.ehlo()  # a new EHLO lets the back-end session go
    assert c.codes(MAIL + b"RCPT TO:<alice@example.com>\r\n")[1] == b"250 2.1.5 Ok"
    first, second = c.backends()
    assert first.commands[0] == b"EHLO mx.example.com"
    assert second.commands[0].startswith(b"XCLIENT ADDR=192.0.2.7 ")
    assert second.commands[1:] == [
        b"EHLO client.example.net",
        b"MAIL FROM:<sender@remote.test>",
        b"RCPT TO:<alice@example.com>",
    ]


def test_xclient_refused_on_the_fast_path_forgets_the_capabilities() -> None:
    c = Client(cache_capabilities=True)
    transaction(c, b"alice@example.com")
    c.ehlo()
    c.connector.script.custom[b"XCLIENT"] = (b"550 5.7.0 Error: insufficient authorization",)
    assert c.codes(MAIL + b"RCPT TO:<alice@example.com>\r\n")[1].startswith(b"451 4.4.1")
    assert c.env.capabilities is not None
    assert c.env.capabilities.get(("10.0.0.1", 25)) is None


def test_mail_parameters_are_replayed_on_the_backend() -> None:
    c = Client()
    c.ehlo()
    c.send(b"MAIL FROM:<s@r.test> SIZE=1234 BODY=8BITMIME\r\nRCPT TO:<alice@example.com>\r\n")
    assert b"MAIL FROM:<s@r.test> SIZE=1234 BODY=8BITMIME" in c.backends()[0].commands


def test_xforward_when_the_backend_has_no_xclient() -> None:
    script = Script(caps=[b"PIPELINING", b"XFORWARD NAME ADDR PROTO HELO SOURCE PORT"])
    c = Client(script=script)
    transaction(c, b"alice@example.com")
    cmds = c.backends()[0].commands
    assert (
        cmds[1] == b"XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=4321 PROTO=ESMTP"
        b" HELO=client.example.net SOURCE=REMOTE"
    )
    assert cmds[2] == b"MAIL FROM:<sender@remote.test>"


def test_backend_starttls_comes_before_xclient_and_is_verified_for_the_host() -> None:
    c = Client(script=Script(starttls=True), backend_tls=TLSMode.STARTTLS)
    assert transaction(c, b"alice@example.com")[1] == b"250 2.1.5 Ok"
    mta = c.backends()[0]
    assert mta.commands[:3] == [b"EHLO mx.example.com", b"STARTTLS", b"EHLO mx.example.com"]
    assert mta.commands[3].startswith(b"XCLIENT ")
    assert c.connector.pumps[0].clientIO.tls_options.host == "10.0.0.1"


def test_backend_tls_that_does_not_verify_is_451_441() -> None:
    c = Client(script=Script(starttls=True), backend_tls=TLSMode.STARTTLS)
    c.connector.tls_ok = False
    assert transaction(c, b"alice@example.com")[1].startswith(b"451 4.4.1")


def test_backend_without_starttls_when_required_is_451_441() -> None:
    c = Client(script=Script(starttls=False), backend_tls=TLSMode.STARTTLS)
    assert transaction(c, b"alice@example.com")[1].startswith(b"451 4.4.1")
    assert c.backends()[0].commands == [b"EHLO mx.example.com"]


def test_recipient_on_another_backend_gets_452_453_and_the_retry_works() -> None:
    with captured_log() as log:
        c = Client()
        codes = transaction(c, b"alice@example.com", b"bob@example.com", b"carol@example.com")
        assert codes == [
            b"250 2.1.0 Ok",
            b"250 2.1.5 Ok",
            b"452 4.5.3 Too many recipients for this transaction; try again",
            b"250 2.1.5 Ok",
        ]
        assert c.send(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
        assert c.send(b"Subject: one\r\n\r\nbody\r\n.\r\n") == b"250 2.0.0 Ok: queued as ABC123\r\n"
        # the client retries bob in a new transaction: another back-end
        assert c.codes(MAIL + b"RCPT TO:<bob@example.com>\r\nDATA\r\n") == [
            b"250 2.1.0 Ok",
            b"250 2.1.5 Ok",
            b"354 End data with <CR><LF>.<CR><LF>",
        ]
        assert c.send(b"Subject: one\r\n\r\nbody\r\n.\r\n").startswith(b"250 2.0.0")
    a, b = c.backends()
    assert (a.host, b.host) == ("10.0.0.1", "10.0.0.2")
    assert [m for m in a.commands if m.startswith(b"RCPT")] == [
        b"RCPT TO:<alice@example.com>",
        b"RCPT TO:<carol@example.com>",
    ]
    assert [m for m in b.commands if m.startswith(b"RCPT")] == [b"RCPT TO:<bob@example.com>"]
    assert len(a.messages) == len(b.messages) == 1
    assert b"QUIT" in a.commands  # the first back-end was let go when the second was needed
    assert (
        "rcpt <bob@example.com> from <sender@remote.test>: deferred: other back-end"
        in "\n".join(log)
    )


def test_backend_session_is_reused_for_the_next_transaction_to_the_same_backend() -> None:
    c = Client()
    c.ehlo()
    for _ in range(3):
        codes = c.codes(MAIL + b"RCPT TO:<alice@example.com>\r\n")
        assert codes[1] == b"250 2.1.5 Ok"
        c.send(b"DATA\r\n")
        assert c.send(b"x\r\n.\r\n").startswith(b"250 ")
    (mta,) = c.backends()
    assert len(mta.messages) == 3


def test_backend_rcpt_rejection_is_passed_through() -> None:
    script = Script(rcpt_replies={"alice@example.com": (b"550 5.2.1 Mailbox disabled",)})
    c = Client(script=script)
    assert transaction(c, b"alice@example.com")[1] == b"550 5.2.1 Mailbox disabled"
    assert c.send(b"DATA\r\n").startswith(b"554 5.5.1")


def test_backend_421_at_rcpt_becomes_451_not_a_close() -> None:
    script = Script(rcpt_replies={"alice@example.com": (b"421 4.3.2 Shutting down",)})
    c = Client(script=script)
    assert transaction(c, b"alice@example.com")[1].startswith(b"451 4.4.2")
    assert not c.transport.disconnecting
    assert c.send(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_backend_unreachable_is_451_441() -> None:
    with captured_log() as log:
        c = Client()
        c.connector.down.add(("10.0.0.1", 25))
        assert transaction(c, b"alice@example.com")[1] == (
            b"451 4.4.1 Mailbox server unavailable, try again later"
        )
    assert "back-end 10.0.0.1:25 unavailable" in "\n".join(log)


def test_backend_greeting_refusal_is_451_441() -> None:
    c = Client(script=Script(greeting=b"554 5.3.2 go away"))
    assert transaction(c, b"alice@example.com")[1].startswith(b"451 4.4.1")


def test_max_recipients() -> None:
    c = Client(cfg=smtp_config(max_recipients=2))
    codes = transaction(c, b"alice@example.com", b"carol@example.com", b"alice@example.com")
    assert codes[3].startswith(b"452 4.5.3")


def test_postmaster_without_domain_is_accepted() -> None:
    c = Client()
    assert transaction(c, b"Postmaster")[1] == b"250 2.1.5 Ok"
    assert c.map.lookups == [("postmaster@example.com", None)]


# ---------------------------------------------------------------- pipelining


def test_pipelined_group_is_answered_in_order() -> None:
    c = Client()
    c.ehlo()
    out = c.codes(
        MAIL
        + b"RCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\n"
        + b"RCPT TO:<x@elsewhere.test>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n"
    )
    assert [line[:9] for line in out] == [
        b"250 2.1.0",
        b"250 2.1.5",
        b"550 5.1.1",
        b"550 5.7.1",
        b"250 2.1.5",
        b"354 End d",
    ]
    out = c.codes(
        b"Subject: hi\r\n\r\nhello\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nQUIT\r\n"
    )
    assert [line[:9] for line in out] == [b"250 2.0.0", b"250 2.1.0", b"250 2.1.5", b"221 2.0.0"]


def test_while_the_map_answers_input_waits() -> None:
    c = Client()
    c.ehlo()
    c.map.pending = []
    out = c.send(MAIL + b"RCPT TO:<alice@example.com>\r\nRCPT TO:<carol@example.com>\r\nNOOP\r\n")
    assert out == b"250 2.1.0 Ok\r\n"
    # a short wait keeps reading the socket (no epoll_ctl pair per command)
    assert c.transport.producerState == "producing"
    assert len(c.map.pending) == 1  # the second RCPT is not even handled yet
    d: Deferred[LookupResult] = c.map.pending.pop(0)
    d.callback(None)
    assert c.read() == b"250 2.1.5 Ok\r\n"
    c.map.pending.pop(0).callback(None)
    assert c.read() == b"250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"
    assert c.transport.producerState == "producing"


def test_a_client_pipelining_too_much_during_a_wait_is_paused() -> None:
    """Memory stays bounded: past HOLD_BUFFER bytes behind a hold the socket is paused."""
    c = Client()
    c.ehlo()
    c.map.pending = []
    c.send(MAIL + b"RCPT TO:<alice@example.com>\r\n")
    assert c.transport.producerState == "producing"
    c.send(b"NOOP\r\n" * (HOLD_BUFFER // 6 + 1))
    assert c.transport.producerState == "paused"
    c.map.pending.pop(0).callback(None)
    out = c.read()
    assert out.startswith(b"250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n")
    assert c.transport.producerState == "producing"


# ---------------------------------------------------------------- DATA


def data_session(client: Client) -> None:
    assert transaction(client, b"alice@example.com")[1] == b"250 2.1.5 Ok"
    assert client.send(b"DATA\r\n").startswith(b"354 ")


def test_dot_stuffing_passes_through_byte_for_byte() -> None:
    c = Client()
    data_session(c)
    body = b"Subject: dots\r\n\r\n..leading dot\r\n.\tnot the end\r\n...\r\nend\r\n.\r\n"
    assert c.send(body[:20]) == b""
    assert c.send(body[20:]) == b"250 2.0.0 Ok: queued as ABC123\r\n"
    assert c.backends()[0].messages == [body]


def test_body_arriving_in_one_octet_chunks() -> None:
    c = Client()
    data_session(c)
    body = b"Subject: x\r\n\r\n..a\r\n.\r\n"
    out = b""
    for i in range(len(body)):
        out += c.send(body[i : i + 1])
    assert out == b"250 2.0.0 Ok: queued as ABC123\r\n"
    assert c.backends()[0].messages == [body]


def test_accepted_message_is_logged_with_size_and_queue_id() -> None:
    with captured_log() as log:
        c = Client()
        data_session(c)
        c.send(b"12345\r\n.\r\n")
    assert (
        "message from <sender@remote.test> accepted by 10.0.0.1:25: size=7 queue-id=ABC123"
        in "\n".join(log)
    )


def test_backend_4xx_at_end_of_data_stays_4xx() -> None:
    c = Client(script=Script(final_reply=(b"451 4.3.0 Try later",)))
    data_session(c)
    assert c.send(b"x\r\n.\r\n") == b"451 4.3.0 Try later\r\n"


def test_backend_refusing_data_is_passed_on() -> None:
    c = Client(script=Script(custom={b"DATA": (b"554 5.5.1 No valid recipients",)}))
    transaction(c, b"alice@example.com")
    assert c.send(b"DATA\r\nRSET\r\n") == b"554 5.5.1 No valid recipients\r\n250 2.0.0 Ok\r\n"


def test_backend_lost_during_data_is_451_442_after_the_end() -> None:
    c = Client()
    data_session(c)
    assert c.send(b"first part\r\n") == b""
    c.connector.pumps[0].serverIO.loseConnection()
    c.connector.flush()
    assert c.send(b"rest\r\n") == b""
    assert (
        c.send(b".\r\n") == b"451 4.4.2 Connection to the mailbox server lost, try again later\r\n"
    )
    assert c.send(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_message_over_max_size_is_552_and_never_reaches_the_backend_end() -> None:
    c = Client()
    data_session(c)
    chunk = b"x" * 998 + b"\r\n"
    out = b""
    for _ in range(120):  # 120 kB > 100 kB
        out += c.send(chunk)
    assert out == b""
    assert c.send(b".\r\n") == b"552 5.3.4 Error: message file too big\r\n"
    assert c.backends()[0].messages == []
    assert c.connector.pumps[0].clientIO.disconnecting  # the back-end's half-message dropped


def test_smuggling_attempt_is_rejected_and_nothing_is_delivered() -> None:
    c = Client()
    data_session(c)
    out = c.send(b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<bob@example.com>\r\n")
    assert out == b""
    assert c.send(b".\r\n").startswith(b"550 5.6.0")
    assert c.backends()[0].messages == []
    assert all(b"evil" not in cmd for s in c.backends() for cmd in s.commands)


def test_pipelined_commands_after_the_body_wait_for_the_final_reply() -> None:
    c = Client()
    data_session(c)
    assert (
        c.send(b"x\r\n.\r\nNOOP\r\nQUIT\r\n")
        == b"250 2.0.0 Ok: queued as ABC123\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
    )


def test_backend_full_pauses_the_client_and_resumes_it() -> None:
    c = Client()
    data_session(c)
    backend_transport = c.connector.pumps[0].clientIO
    gate = backend_transport.producer
    assert gate is c.session.gate
    gate.pauseProducing()
    assert c.transport.producerState == "paused"
    gate.resumeProducing()
    assert c.transport.producerState == "producing"
    c.send(b".\r\n")
    assert backend_transport.producer is None  # unregistered at the end of data


def test_data_without_accepted_recipients_is_554() -> None:
    c = Client()
    assert transaction(c, b"nobody@example.com")[1].startswith(b"550")
    assert c.send(b"DATA\r\n").startswith(b"554 5.5.1")


def test_rset_resets_the_backend_transaction_too() -> None:
    c = Client()
    transaction(c, b"alice@example.com")
    assert c.send(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    assert c.backends()[0].commands[-1] == b"RSET"
    assert c.send(b"RCPT TO:<alice@example.com>\r\n").startswith(b"503 5.5.1")


def test_client_leaving_mid_data_aborts_the_backend() -> None:
    c = Client()
    data_session(c)
    c.send(b"partial\r\n")
    c.session.connectionLost(None)
    c.connector.flush()
    assert c.backends()[0].messages == []
    assert c.connector.pumps[0].clientIO.disconnecting


def test_quit_says_goodbye_to_the_backend() -> None:
    with captured_log() as log:
        c = Client()
        transaction(c, b"alice@example.com")
        c.send(b"QUIT\r\n")
        c.session.connectionLost(None)
    assert c.backends()[0].commands[-1] == b"QUIT"
    assert "0 messages, back-end session 10.0.0.1:25 closed, 0 errors" in log[-1]


# ---------------------------------------------------------------- limits


def test_max_errors_closes_with_421() -> None:
    c = Client()
    out = c.send(b"FROB\r\n" * 5 + b"NOOP\r\n")
    assert out.splitlines()[-1] == b"421 4.7.0 Error: too many errors, closing connection"
    assert out.count(b"500 5.5.2") == 5
    assert b"250" not in out
    assert c.transport.disconnecting


def test_command_line_too_long_then_the_next_command_works() -> None:
    c = Client()
    assert (
        c.send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
        == b"500 5.5.6 Error: line too long\r\n250 2.0.0 Ok\r\n"
    )


def test_endless_line_is_skipped_to_its_end() -> None:
    c = Client()
    assert c.send(b"x" * 13000) == b"500 5.5.6 Error: line too long\r\n"
    assert c.send(b"y" * 5000 + b"\r") == b""
    assert c.send(b"\nNOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_starttls_discards_pipelined_commands_and_resets_the_session() -> None:
    c = Client(listener_tls=TLSMode.STARTTLS)
    c.ehlo()
    c.send(MAIL)
    out = c.send(b"STARTTLS\r\nRCPT TO:<alice@example.com>\r\nNOOP\r\n")
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    assert c.map.lookups == []
    assert c.send(MAIL).startswith(b"503 5.5.1")  # EHLO again, as RFC 3207 says


def test_silence_gets_421_442() -> None:
    c = Client()
    c.clock.advance(299)
    assert c.read() == b""
    c.clock.advance(2)
    assert c.read() == b"421 4.4.2 Error: timeout exceeded, closing connection\r\n"
    assert c.transport.disconnecting


def test_no_timeout_while_the_node_waits_on_the_map() -> None:
    c = Client()
    c.ehlo()
    c.map.pending = []
    c.send(MAIL + b"RCPT TO:<alice@example.com>\r\n")
    c.clock.advance(400)
    assert not c.transport.disconnecting
    c.map.pending.pop(0).callback(None)
    assert c.read() == b"250 2.1.5 Ok\r\n"


def test_backend_silence_times_out_as_451() -> None:
    c = Client(script=Script(custom={b"MAIL": ()}))  # MAIL never answered
    c.ehlo()
    assert c.send(MAIL + b"RCPT TO:<alice@example.com>\r\n") == b"250 2.1.0 Ok\r\n"
    c.clock.advance(301)
    assert c.read().startswith(b"451 4.4.1")
