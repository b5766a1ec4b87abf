"""C{axigen-fe} command: C{check-config FILE} and C{lookup ADDRESS}.

Exit codes follow sysexits where they apply, so scripts and monitoring can tell a
routing answer (0/1) from a directory outage (75, EX_TEMPFAIL) and a usage or
configuration mistake (2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from axigen_fe.config.load import ConfigError, load
from axigen_fe.usermap.interface import LookupResult, Outcome

EXIT_ROUTED = 0
EXIT_NOT_ROUTED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75

EXIT_BY_OUTCOME = {
    Outcome.ROUTED: EXIT_ROUTED,
    Outcome.UNKNOWN_USER: EXIT_NOT_ROUTED,
    Outcome.BAD_PASSWORD: EXIT_NOT_ROUTED,
    Outcome.TEMPFAIL: EXIT_TEMPFAIL,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="axigen-fe", description="Tools for an axigen-fe node's configuration and user maps."
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "check-config",
        help="validate a configuration file; exit 0 if usable, 2 with every problem listed",
    )
    c.add_argument("file", type=Path)
    lk = sub.add_parser(
        "lookup",
        help="ask a user map where ADDRESS is routed; prints one JSON object",
        description=(
            "Ask a user map where ADDRESS is routed. Prints one JSON object. Exit 0 routed, "
            "1 unknown user or bad password, 75 temporary failure, 2 usage or config error."
        ),
    )
    lk.add_argument("--config", "-c", type=Path, required=True)
    which = lk.add_mutually_exclusive_group()
    which.add_argument(
        "--usermap", help="the [[usermap]] name (default: the only one, or the one [imap] uses)"
    )
    which.add_argument(
        "--service",
        choices=["imap", "pop3", "smtp", "submission", "webmail"],
        help="use the map this service uses",
    )
    lk.add_argument(
        "--password-stdin",
        action="store_true",
        help="read a password (one line) from stdin and check it",
    )
    lk.add_argument("address")
    return p


def _pick_usermap(config: Any, usermap: str | None, service: str | None) -> str:
    if usermap is not None:
        if usermap not in config.usermaps:
            raise ValueError(
                f"no [[usermap]] named {usermap!r} "
                f"(known: {', '.join(sorted(config.usermaps)) or 'none'})"
            )
        return usermap
    if service is not None:
        if service not in config.services:
            raise ValueError(f"the configuration has no [{service}] service")
        return str(config.services[service].usermap)
    if len(config.usermaps) == 1:
        return str(next(iter(config.usermaps)))
    for kind in ("imap", "pop3", "smtp", "submission", "webmail"):
        if kind in config.services:
            return str(config.services[kind].usermap)
    raise ValueError("several user maps are defined; choose one with --usermap NAME")


def _result_json(result: LookupResult, usermap: str) -> str:
    return json.dumps(
        {
            "address": result.address,
            "usermap": usermap,
            "result": result.outcome.value,
            "host": result.host,
            "port": result.port,
            "detail": result.detail,
        }
    )


def _lookup(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
        name = _pick_usermap(config, args.usermap, args.service)
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return EXIT_USAGE
    except ValueError as e:
        sys.stderr.write(f"axigen-fe lookup: {e}\n")
        return EXIT_USAGE
    password: bytes | None = None
    if args.password_stdin:
        line = sys.stdin.buffer.readline()
        password = line.rstrip(b"\r\n")

    from twisted.internet import task

    from axigen_fe.usermap.build import UserMaps

    outcome: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        maps = UserMaps(reactor, config)
        try:
            result = await maps.maps[name].lookup(args.address, password)
        finally:
            await maps.close()
        outcome["result"] = result

    from twisted.internet.defer import Deferred

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            sys.stderr.write("axigen-fe lookup: the lookup failed unexpectedly (see above)\n")
            return EXIT_TEMPFAIL
    result: LookupResult = outcome["result"]
    print(_result_json(result, name))
    return EXIT_BY_OUTCOME[result.outcome]


def _check_config(args: argparse.Namespace) -> int:
    try:
        load(args.file)
    except ConfigError as e:
        for problem in e.problems:
            print(problem)
        return EXIT_USAGE
    print(f"{args.file}: OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    return _lookup(args)


if __name__ == "__main__":
    sys.exit(main())


def console_main() -> None:
    sys.exit(main())
