"""The node's log observer: same line shape as twistd's, session text taken as formatted."""

from __future__ import annotations

import io

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from axigen_fe.ops.logobserver import FastTextLogObserver, observer_for_twistd
from axigen_fe.ops.sessionlog import SessionLog


def _capture() -> tuple[io.StringIO, FastTextLogObserver, Logger]:
    out = io.StringIO()
    observer = FastTextLogObserver(out)
    return out, observer, Logger(namespace="t", observer=observer)


def test_session_lines_keep_their_text_and_fields() -> None:
    from axigen_fe.ops import sessionlog

    out = io.StringIO()
    observer = FastTextLogObserver(out)
    events: list[dict[str, object]] = []
    original = sessionlog._log
    sessionlog._log = Logger(
        namespace="axigen_fe.session", observer=lambda e: (events.append(e), observer(e))
    )
    try:
        SessionLog("imap", "0000002A", "127.0.0.9:4242").info(
            "login {user} from {peer}", user="alice@example.com"
        )
    finally:
        sessionlog._log = original
    line = out.getvalue()
    assert line.endswith(
        "[axigen_fe.session#info] IMAP:0000002A: login alice@example.com from 127.0.0.9:4242\n"
    )
    assert events[0]["user"] == "alice@example.com" and events[0]["session"] == "0000002A"


def test_other_events_are_formatted_and_failures_carry_their_traceback() -> None:
    out, _, log = _capture()
    log.warn("disk {pct}% full", pct=93)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("boom", Failure())
    text = out.getvalue()
    assert "[t#warn] disk 93% full\n" in text
    assert "[t#critical] boom\n\tTraceback" in text and "ZeroDivisionError" in text


def test_a_bad_format_string_in_a_session_line_does_not_lose_the_event() -> None:
    from axigen_fe.ops import sessionlog

    out = io.StringIO()
    observer = FastTextLogObserver(out)
    original = sessionlog._log
    sessionlog._log = Logger(namespace="axigen_fe.session", observer=observer)
    try:
        SessionLog("pop3", "00000001", "p").error("oops {missing}", other=1)
    finally:
        sessionlog._log = original
    assert "POP3:00000001: oops {missing} {'other': 1}" in out.getvalue()


def test_twistd_options_choose_the_target_like_twistd() -> None:
    assert observer_for_twistd(None) is None
    assert observer_for_twistd({"syslog": True}) is None
    assert observer_for_twistd({"logger": "x.y"}) is None
    assert observer_for_twistd({"nodaemon": True, "logfile": None}) is not None


def test_levels_are_named() -> None:
    out, observer, _ = _capture()
    observer(
        {"log_namespace": "n", "log_level": LogLevel.error, "log_format": "x", "log_time": 0.0}
    )
    assert "[n#error] x" in out.getvalue()
