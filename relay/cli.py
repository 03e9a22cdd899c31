"""The ``trackrelay`` command line.

Every subcommand that reads the config takes ``--config``; a configuration problem is
printed as one line naming the key (exit code 2), never as a traceback. Only the
services (``serve``, ``tracker``) log by their config; every other command prints its
output on stdout and nothing else on stderr but errors, unless asked with ``-v`` (info
logs) or ``-vv`` (debug). Ctrl-C (SIGINT) ends any command with exit code 130 (128 + 2,
as shells report it) and no traceback; the services drain first, as on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import json
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from types import FrameType
from typing import Any, BinaryIO

from relay import __version__
from relay.cli_config import add_config, load
from relay.config import Config, ConfigError, check_listen_addresses, load_config
from relay.store.base import StoreError


def _add_process_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_workers_flag, metavar="N|auto",
                   help="worker processes sharing the listening sockets "
                        "(replaces process.workers; default auto: one per core)")
    p.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"),
                   help="event loop (replaces process.event_loop; auto: uvloop if installed)")


def _workers_flag(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number or "auto", got {value!r}') from None


#: Commands that run services and log by ``[log]``; the others are quiet by default.
SERVICES = ("serve", "tracker")


def _configure_logs(config: Config, verbose: int = 0) -> None:
    from relay.logs import configure_logging

    configure_logging("debug" if verbose else config.log.level, config.log.format)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v``/``-vv`` on every (sub)command, however deep."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _add_verbose(sub)
    if parser.prog != "trackrelay":
        parser.add_argument("-v", "--verbose", action="count", default=0,
                            help="log to stderr: -v info, -vv debug (services: -v is debug)")


# --- subcommands ---------------------------------------------------------------------------


def _run_services(args: argparse.Namespace, *, smtp: bool, http: bool) -> int:
    """One process, or a supervisor of ``process.workers`` worker processes."""
    from relay import event_loop, workers

    config = load(args)
    if args.workers is not None:
        if args.workers != "auto" and not 1 <= args.workers <= 64:
            raise ConfigError(f'--workers: must be "auto" or from 1 to 64, got {args.workers}')
        config.process.workers = args.workers
    if args.event_loop is not None:
        config.process.event_loop = args.event_loop
    loop = event_loop.choose(config.process.event_loop)  # a missing uvloop: exit 2 at once
    _configure_logs(config, args.verbose)
    index = workers.worker_index()
    if index is not None:
        workers.follow_supervisor()
    if index is None and smtp:
        from relay.server import warn_loopback_base_url

        warn_loopback_base_url(config)
    if index is None:
        _check_plugins(config)  # a bad plugin setting: one line, before anything starts
    if index is None and workers.worker_count(config.process.workers) > 1:
        return _supervise(config, args.argv, smtp=smtp, http=http)
    from relay.listeners import Listeners
    from relay.server import run

    if index is not None:
        import structlog

        structlog.contextvars.bind_contextvars(worker=index)
        listeners = Listeners.from_environ()
    else:
        listeners = Listeners.bind_all(config, smtp=smtp, http=http)
    try:
        services = run(config, smtp=smtp, http=http, listeners=listeners)
        if index is not None:  # a worker: its supervisor gives the exit status
            event_loop.run(services, loop)
            return 0
        interrupted = event_loop.run(_until_stopped(services), loop)
    finally:
        listeners.close()
    return INTERRUPTED if interrupted else 0


#: The exit status after Ctrl-C (SIGINT), as shells report it: 128 + 2.
INTERRUPTED = 128 + signal.SIGINT


async def _until_stopped(services: Coroutine[Any, Any, None]) -> bool:
    """Run the services until a signal stops them; True if it was SIGINT (Ctrl-C), which
    they are handed as SIGTERM (the same drain) once it is noted."""
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        signal.raise_signal(signal.SIGTERM)

    task = asyncio.ensure_future(services)
    await asyncio.sleep(0)  # the services set their signal handlers before their first wait
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
    await task
    return interrupted


def _supervise(config: Config, argv: Sequence[str], *, smtp: bool, http: bool) -> int:
    """A supervisor of workers; ``INTERRUPTED`` if SIGINT stopped it. Its own handlers
    say only that a signal came, so the signals are read from a wakeup socket."""
    from relay import workers

    seen, wakeup = socket.socketpair()
    seen.setblocking(False)
    wakeup.setblocking(False)
    previous = signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    try:
        code = workers.supervise(config, argv, smtp=smtp, http=http)
    finally:
        signal.set_wakeup_fd(previous)
        try:
            signals = seen.recv(4096)
        except BlockingIOError:
            signals = b""
        seen.close()
        wakeup.close()
    return INTERRUPTED if signal.SIGINT in signals else code


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_services(args, smtp=True, http=not args.no_http)


def cmd_tracker(args: argparse.Namespace) -> int:
    return _run_services(args, smtp=False, http=True)


def _check_plugins(config: Config) -> int:
    """Load the plugins, run their own settings checks (``trackrelay_check_config``) and
    build their tracker routes; an unknown or broken plugin, a bad setting or a route on
    a path taken raises ``ConfigError``. The number of plugins loaded."""
    from relay.app import App
    from relay.plugin_host import PluginHost
    from relay.tracker.plugin_routes import check_plugin_routes

    host = PluginHost(config)
    app = App(config, host)
    asyncio.run(app.check_config())
    check_plugin_routes(app)
    return len(host.plugins())


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    if not path:
        raise ConfigError("check-config: name the file (trackrelay check-config FILE or "
                          "--config FILE)")
    config = load_config(path)
    check_listen_addresses(config)
    print(f"{path}: OK ({_check_plugins(config)} plugins)")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from relay.plugin_host import PluginHost

    config = load(args)
    host = PluginHost(config)
    disabled = sorted(config.plugins.disabled)
    rows: list[dict[str, Any]] = []
    for info in host.plugins():
        settings = config.plugin_config(info.name)
        rows.append({
            "name": info.name, "enabled": True, "builtin": info.builtin,
            "module": info.module, "distribution": info.distribution,
            "config_section": f"plugins.{info.name}",
            "settings": sorted(settings), "hooks": list(info.hooks)})
    rows += [{"name": name, "enabled": False, "config_section": f"plugins.{name}",
              "settings": sorted(config.plugin_config(name))} for name in disabled]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print("in the order hooks call them (built-ins, then installed plugins, by name):")
    for row in rows:
        if not row["enabled"]:
            print(f"{row['name']}: disabled ([plugins] disabled)")
            continue
        origin = "built-in" if row["builtin"] else f"installed from {row['distribution']}" \
            if row["distribution"] else "registered by code"
        section = (f"[{row['config_section']}] sets {', '.join(row['settings'])}"
                   if row["settings"] else f"no [{row['config_section']}] settings")
        print(f"{row['name']}: enabled, {origin}, {row['module']}; {section}")
        for hook in row["hooks"]:
            print(f"    {hook}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from relay.tracking_rules import explain

    config = load(args)
    answer = explain(config.tracking, sender=args.sender, recipients=args.recipients,
                     header_from=args.header_from, campaign=args.campaign,
                     track_header=args.track)
    if args.json:
        print(json.dumps(answer))
        return 0
    rule = answer["rule"] or "no rule (the [tracking] defaults)"
    print(f"rule: {rule}")
    for key in ("track", "multi_recipient", "rewrite_text_links", "first_open_mail",
                "decision"):
        print(f"{key}: {answer[key]}")
    return 0


def cmd_rewrite(args: argparse.Namespace) -> int:
    from relay.rewrite.cli import run_rewrite

    message = _within_message_size(args.config, sys.stdin.buffer)
    if message is None:
        return 1
    return asyncio.run(run_rewrite(args.config, args.recipient or [], args.sender,
                                   message, sys.stdout.buffer, sys.stderr))


def _within_message_size(config_path: str | None, stdin: BinaryIO) -> BinaryIO | None:
    """The message on ``stdin`` if the relay would take it, else None (said on stderr):
    a dry run refuses what the listener refuses, as the listener words it, and reads no
    more of a message than the limit."""
    try:
        limit = load_config(config_path).relay.max_message_size
    except ConfigError:  # the dry run reports it as it reports every config problem
        return stdin
    raw = stdin.read(limit + 1)
    if len(raw) > limit:
        print(f"trackrelay rewrite: refused with 552 5.3.4 Message too big (larger than "
              f"relay.max_message_size, {limit} octets)", file=sys.stderr)
        return None
    return io.BytesIO(raw)


def cmd_bounces_classify(args: argparse.Namespace) -> int:
    from relay.bounces.cli import classify_files
    from relay.bounces.hook import from_host
    from relay.plugin_host import PluginHost

    config = load(args)
    host = PluginHost(config)
    return classify_files(args.files, sys.stdout, hook=from_host(host),
                          limit=config.bounces.max_message_size)


def cmd_hash_password(args: argparse.Namespace) -> int:
    from relay.auth import hash_password

    # The users file's line is "user:<hash>" (relay.users_file): a user name with a
    # colon, white space or a control character would not read back as written.
    if not args.user or any(c == ":" or c.isspace() or not c.isprintable()
                            for c in args.user):
        raise ConfigError(f"hash-password: a user name without ':', spaces or control "
                          f"characters, got {args.user!r}")
    if sys.stdin is None or (not args.stdin and not sys.stdin.isatty()):
        print("trackrelay: no terminal to ask for the password on: pipe it in with --stdin",
              file=sys.stderr)
        return 2
    password = (sys.stdin.buffer.readline().rstrip(b"\r\n") if args.stdin
                else getpass.getpass().encode("utf-8", "surrogateescape"))
    if not password:
        print("trackrelay: empty password", file=sys.stderr)
        return 2
    print(f"{args.user}:{hash_password(password)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackrelay",
        description="SMTP relay proxy with open and click tracking, and its tracker.",
    )
    parser.add_argument("--version", action="version", version=f"trackrelay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the SMTP relay and the tracker in one process")
    add_config(p)
    p.add_argument("--smtp-listen", metavar="HOST:PORT", action="append",
                   help="SMTP listen address (repeatable; replaces relay.listen)")
    p.add_argument("--upstream", metavar="HOST:PORT", help="upstream SMTP server")
    p.add_argument("--capture-dir", metavar="DIR",
                   help="write messages to DIR as .eml instead of an upstream server")
    p.add_argument("--http-listen", metavar="HOST:PORT", help="tracker HTTP listen address")
    p.add_argument("--store", metavar="URL", help="store URL (sqlite:///… or postgresql://…)")
    p.add_argument("--no-http", action="store_true", help="run the SMTP relay only")
    _add_process_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("tracker", help="run the tracker (HTTP) alone")
    add_config(p)
    p.add_argument("--http-listen", metavar="HOST:PORT", help="tracker HTTP listen address")
    p.add_argument("--store", metavar="URL", help="store URL")
    _add_process_flags(p)
    p.set_defaults(func=cmd_tracker)

    p = sub.add_parser("check-config", help="validate a config file and its plugins")
    add_config(p)
    p.add_argument("file", nargs="?", help="the file (or --config FILE)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("plugins", help="list plugins in call order: enabled or not, their "
                                       "config section, the hooks they implement")
    add_config(p)
    p.add_argument("--json", action="store_true", help="one JSON object per plugin")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("explain", help="which [[tracking.rules]] rule a sample message "
                                       "takes, and what is tracked in it")
    add_config(p)
    p.add_argument("--from", dest="sender", required=True, metavar="ADDR",
                   help="the envelope sender (MAIL FROM)")
    p.add_argument("--to", dest="recipients", action="append", required=True,
                   metavar="ADDR", help="an envelope recipient (repeatable)")
    p.add_argument("--header-from", metavar="ADDR", help="the From header (default: --from)")
    p.add_argument("--campaign", metavar="ID", help="X-Trackrelay-Campaign")
    p.add_argument("--track", choices=("all", "opens", "clicks", "off", "split"),
                   help="X-Trackrelay-Track")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_explain)

    from relay.plugin_template import cmd_new_plugin

    p = sub.add_parser("new-plugin", help="write a working plugin package to start from")
    p.add_argument("name", metavar="NAME", help="the plugin's name (its entry point)")
    p.add_argument("--dir", default=".", help="where to create trackrelay-NAME/ "
                                              "(default: here)")
    p.set_defaults(func=cmd_new_plugin)

    p = sub.add_parser("hash-password", help="print a users-file line for SMTP AUTH")
    p.add_argument("user")
    p.add_argument("--stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_hash_password)

    from relay.tracker import cli as tracker_cli

    p = sub.add_parser("stats", help="a campaign's or the last day's figures")
    add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL")
    tracker_cli.add_stats_arguments(p)
    p.set_defaults(func=tracker_cli.stats)

    p = sub.add_parser("events", help="print events as a table (--json: JSON lines, the "
                                       "API's objects)")
    add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL")
    tracker_cli.add_events_arguments(p)
    p.set_defaults(func=tracker_cli.events)

    from relay import queue_cli

    p = sub.add_parser("queue", help="notices and per-recipient copies the relay owes and "
                                      "has not handed on yet (--flush: try them now)")
    add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL (its spool path names the "
                                                   "folders)")
    queue_cli.add_arguments(p)
    p.set_defaults(func=queue_cli.run)

    p = sub.add_parser("rewrite", help="print the message the relay would forward "
                                        "(stdin to stdout), without sending it")
    add_config(p)
    p.add_argument("--recipient", metavar="ADDR", action="append",
                   help="envelope recipient (repeatable; default: one, recipient@example.com; "
                        "give two or more to see multi-recipient handling)")
    p.add_argument("--sender", metavar="ADDR", default=None,
                   help="envelope sender (default: sender@example.com; \"\" or \"<>\" for "
                        "the null sender of a notification)")
    p.set_defaults(func=cmd_rewrite)

    p = sub.add_parser("bounces", help="bounce tools")
    bounces = p.add_subparsers(dest="bounces_command", required=True)
    p = bounces.add_parser("classify", help="print one JSON object per bounced recipient "
                                            "of each file (nothing for other mail)")
    add_config(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_bounces_classify)

    from relay.tracker import token_cli

    token_cli.add_subcommands(sub)  # token create

    from relay.bounces.intake_cli import add_subcommands as add_bounce_subcommands

    add_bounce_subcommands(sub)  # inbound, suppressions

    from relay.engagement import cli as engagement_cli

    p = sub.add_parser("reclassify",
                       help="apply the current human/machine rules to stored events")
    add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL")
    engagement_cli.add_reclassify_arguments(p)
    p.set_defaults(func=engagement_cli.reclassify)

    from relay.engagement import privacy_cli

    p = sub.add_parser("purge", help="delete events (and messages without any event "
                                     "left) older than a duration")
    add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL")
    privacy_cli.add_purge_arguments(p)
    p.set_defaults(func=privacy_cli.purge)

    p = sub.add_parser("forget", help="erase one contact's data (the erasure is recorded "
                                      "by address hash; a suppression is kept)")
    add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL")
    privacy_cli.add_forget_arguments(p)
    p.set_defaults(func=privacy_cli.forget)

    _add_verbose(parser)
    return parser


def _store_url(args: argparse.Namespace) -> str:
    """The store URL a command used (``--store``, else its config), without a password."""
    from relay.config import redact_url

    url = getattr(args, "store", None)
    if not url:
        try:
            url = load_config(getattr(args, "config", None)).store.url
        except ConfigError:
            return "the store"
    return redact_url(url)


#: Options whose value may be a relative time written with a leading minus (``-1h``),
#: which argparse would otherwise take for an option of its own.
_TIME_OPTIONS = ("--since", "--until")
_RELATIVE = re.compile(r"-\d")


def _attach_relative_times(argv: Sequence[str]) -> list[str]:
    """``--since -1h`` as ``--since=-1h``: the form the help shows works as written."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _TIME_OPTIONS and _RELATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_at_once() -> Iterator[None]:
    """Ctrl-C ends a command at once, wherever it waits: asyncio.run's own handler would
    only cancel its task, and a read of standard input would go on waiting. (Only the
    main thread may set a handler; a command run from another keeps Python's.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_attach_relative_times(given))
    args.argv = given
    if sys.stdin is None:  # started with stdin closed (<&-): read as empty, no traceback
        sys.stdin = open(os.devnull, encoding="utf-8")
    if args.command not in SERVICES:
        from relay.logs import configure_logging

        # stdout is the command's output; logs, when asked for, go to stderr.
        configure_logging({0: "error", 1: "info"}.get(args.verbose, "debug"), "auto",
                          stream=sys.stderr)
    try:
        # the services stop on SIGINT as on SIGTERM, by their own handlers
        with contextlib.nullcontext() if args.command in SERVICES else _interrupt_at_once():
            return int(args.func(args))
    except ConfigError as exc:
        print(f"trackrelay: config error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"trackrelay: store error: {_store_url(args)}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``trackrelay stats | head``): stop quietly, and keep the
        # interpreter's last flush of stdout from failing again (Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
