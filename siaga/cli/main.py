"""The `siaga` console script: run, check, simulate, demo, deadletters, alerts, silences,
broker init, devices add, reports."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from devices.kinds import Kind
from devices.registry import Registry, load_catalog
from rules.config import RulesFile, load_rules
from siaga.broker.auth import SERVICE_USER
from siaga.broker.provision import NewDevice, ProvisionError, add_device, device_sheet, init_broker
from siaga.cli import reportscli, simulateargs
from siaga.cli.apiclient import (
    ApiClient,
    base_url,
    format_alert,
    format_alerts,
    format_silences,
)
from siaga.cli.logformat import FORMATS, make_handler
from siaga.settings import BUNDLED_CONFIG, Settings, load_settings
from siaga_core.errors import ConfigurationError, SiagaError
from siaga_core.redaction import redact_userinfo

# Whatever stops the service, what it had not acknowledged is still the broker's to redeliver.
STOPPED: Final = "the service stopped"
NOTHING_LOST: Final = ("nothing unacknowledged is lost (the broker redelivers it): fix the cause "
                       "and start it again")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[make_handler(args.log_format)])
    json_log = args.log_format == "json"
    if json_log:
        logging.captureWarnings(True)  # a warning too is a JSON line, not free text on stderr
    # Each scheduled run and each HTTP request would be a line: only their problems are news.
    for noisy in ("apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The command line's edge of the error tree (siaga_core.errors): an error raised on
    # purpose is the operator's to act on, one message and exit 1; anything else is a bug
    # and leaves with its traceback.
    # With --log-format json every line on stderr is a JSON object, these too.
    try:
        code: int = args.command(args)
    except ConfigurationError as exc:
        _say(json_log, f"configuration error:\n{exc}")
        return 1
    except SiagaError as exc:
        _say(json_log, str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        if not json_log:
            raise
        logging.getLogger("siaga").critical("a bug stopped the command", exc_info=True)
        return 1  # as Python's own exit on an uncaught exception
    return code


def _say(json_log: bool, text: str) -> None:
    """An error for the operator: one message on stderr, a log line under --log-format json."""
    if json_log:
        logging.getLogger("siaga").error("%s", text)
    else:
        print(f"siaga: {text}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siaga", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    log_help = "text (default): for a terminal; json: one object a line, for log shippers"
    parser.add_argument("--log-format", choices=FORMATS, default="text", help=log_help)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(command=func)
        return p

    def config_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", type=Path, default=None,
                       help=f"YAML configuration (default: the bundled {BUNDLED_CONFIG.name})")

    run = command("run", _run, "the service: ingest, store, evaluate")
    config_option(run)
    # Also after `run`, where a unit's ExecStart= puts it; SUPPRESS: unless given here, the
    # option before the command stands.
    run.add_argument("--log-format", choices=FORMATS, default=argparse.SUPPRESS, help=log_help)
    config_option(command("check", _check,
                          "validate a configuration, its device catalog and its rules"))

    simulate = command("simulate", _simulate, "publish simulated readings over MQTT "
                       "(`siaga simulate reports`: a year of residents' reports)")
    config_option(simulate)
    simulateargs.add_arguments(simulate)

    demo = command("demo", _demo, "broker, database, service and simulators on this machine")
    demo.add_argument("--rate", type=float, default=200.0, help="readings per second")
    demo.add_argument("--duration", type=float, default=None,
                      help="seconds (default: until Ctrl-C)")
    demo.add_argument("--dir", type=Path, default=Path(".siaga"),
                      help="where the demo keeps its data")
    demo.add_argument("--influx-api", choices=["v1", "v2"], default="v1",
                      help="v1: InfluxDB 1.6 /write; v2: /api/v2/write on VictoriaMetrics")
    demo.add_argument("--port", type=int, default=8080,
                      help="the console's and API's port (default 8080; a free one if taken)")

    dead = command("deadletters", _deadletters, "list the messages Siaga could not store, and why")
    config_option(dead)
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--code", help="only this reason code, e.g. invalid-reading")
    dead.add_argument("--counts", action="store_true", help="totals by reason code")
    _api_parsers(sub, config_option)
    _provision_parsers(sub, config_option)
    reportscli.add_parsers(sub, config_option, _settings)
    return parser


def _settings(args: argparse.Namespace, *, require_files: bool = False) -> Settings:
    return load_settings(args.config, require_files=require_files)


def _configuration(args: argparse.Namespace) -> tuple[Settings, Registry, RulesFile]:
    """Everything `siaga run` and `siaga check` read before they act: the configuration,
    its catalog and its rules. Any mistake raises `ConfigFileError` (main prints it, exit 1)."""
    settings = _settings(args, require_files=True)
    registry = load_catalog(settings.catalog_path)
    return settings, registry, load_rules(settings.rules_path, registry)


def _run(args: argparse.Namespace) -> int:
    # Read and checked before the event loop starts: a mistake in a file is the operator's
    # to fix, printed as `siaga check` prints it, never a traceback.
    settings, registry, rules = _configuration(args)
    if rules.skipped:
        logging.getLogger("siaga").warning("%s", _skipped_text(settings, rules))
    try:
        return _serve(settings, registry, rules, verbose=args.verbose)
    except Exception as bug:
        # A bug: it leaves with its traceback (exit 1) and a note saying what it cost.
        bug.add_note(f"siaga: {STOPPED} on an error; {NOTHING_LOST}")
        raise


def _serve(settings: Settings, registry: Registry, rules: RulesFile, *, verbose: bool) -> int:
    from siaga.app import serve

    code = 0
    try:
        asyncio.run(serve(settings, registry, rules))
    except* (SiagaError, OSError) as stopped:
        # Raised on purpose, or the machine's answer (a port taken, a disk, a permission):
        # one line each, also from inside the service's TaskGroup, whose group `except*`
        # opens. Anything else propagates to `_run`. (An `except*` clause cannot `return`.)
        for exc in _leaves(stopped):
            logging.getLogger("siaga").error("%s: %s; %s", STOPPED, exc, NOTHING_LOST,
                                             exc_info=exc if verbose else None)
        code = 1
    return code


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in `group` and in the groups nested in it, in order."""
    return [leaf for exc in group.exceptions
            for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])]


def _check(args: argparse.Namespace) -> int:
    settings, registry, rules = _configuration(args)
    source = args.config or BUNDLED_CONFIG
    skipped = f" ({len(rules.skipped)} skipped or cut, below)" if rules.skipped else ""
    print(f"{source}: OK\n"
          f"  catalog   {settings.catalog_path}: {len(registry)} devices\n"
          f"  rules     {settings.rules_path}: {len(rules.rules)} rules{skipped}, "
          f"{len(rules.receivers)} receivers, {len(rules.routes)} routes\n"
          f"  MQTT      {settings.mqtt.host}:{settings.mqtt.port}{_mqtt_login(settings)}\n"
          f"  InfluxDB  {settings.influx.api} at {redact_userinfo(settings.influx.url)}\n"
          f"  reports   {_report_book(settings)}")
    if rules.skipped:
        # A warning, not an error (exit 0): optional rules are written for another catalog.
        print(f"warning: {_skipped_text(settings, rules)}")
    return 0


def _report_book(settings: Settings) -> str:
    url = settings.report_book.database_url
    if url is None or not url.get_secret_value():
        return f"SQLite {settings.data_dir / 'reports.sqlite'}"
    return f"PostgreSQL {redact_userinfo(url.get_secret_value())}"


def _skipped_text(settings: Settings, rules: RulesFile) -> str:
    """The one message, for `siaga run`'s log and `siaga check`, on optional rules cut."""
    return (f"{len(rules.skipped)} optional rules skipped or cut: the catalog "
            f"{settings.catalog_path} lacks their devices or thresholds\n"
            + "\n".join(f"  {line}" for line in rules.skipped))


def _simulate(args: argparse.Namespace) -> int:
    from siaga.cli import simulate as simulatorcli

    return simulatorcli.run(args, lambda: _settings(args, require_files=True))


def _demo(args: argparse.Namespace) -> int:
    from siaga.cli.demo import Demo

    return asyncio.run(Demo(args.dir, rate=args.rate, duration_s=args.duration,
                            influx_api=args.influx_api, port=args.port).run())


def _deadletters(args: argparse.Namespace) -> int:
    from ingest.deadletters import DeadLetterStore, format_table

    settings = _settings(args)
    path = settings.data_dir / "deadletters.sqlite"
    if not path.exists():
        print(f"no dead letters: {path} does not exist yet")
        return 0
    with DeadLetterStore(path) as store:
        if args.counts:
            for code, count in sorted(store.counts().items()):
                print(f"{count:>10}  {code}")
        else:
            print(format_table(store.recent(limit=args.limit, code=args.code)))
    return 0


def _api_parsers(sub: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """`siaga alerts ...` and `siaga silences ...`: talk to a running service's HTTP API."""

    def action(group: Any, name: str, func: Callable[[argparse.Namespace], int],
               help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(command=func)
        config_option(p)
        p.add_argument("--url", help="the API's base URL (default: $SIAGA_API_URL, else the "
                                     "configuration's http.host and http.port)")
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        return p

    alerts = sub.add_parser("alerts", help="list, show and acknowledge the service's alerts")
    group = alerts.add_subparsers(required=True, metavar="ACTION")
    listing = action(group, "list", _alerts_list, "alerts, newest first")
    listing.add_argument("--status", choices=["pending", "firing", "resolved"])
    listing.add_argument("--match", action="append", default=[], metavar="MATCHER",
                         help="label matcher: name=value, !=, =~regex, !~regex (repeat to AND)")
    listing.add_argument("--limit", type=int, default=100)
    show = action(group, "show", _alerts_show, "one alert and its history")
    show.add_argument("fingerprint")
    ack = action(group, "ack", _alerts_ack, "acknowledge an alert: no more repeat notifications")
    ack.add_argument("fingerprint")
    ack.add_argument("--comment", default="")
    ack.add_argument("--by", help="who acknowledges (default: your user name)")

    silences = sub.add_parser("silences", help="add, list and expire silences")
    group = silences.add_subparsers(required=True, metavar="ACTION")
    add = action(group, "add", _silences_add, "silence the alerts matching every --match")
    add.add_argument("--match", action="append", required=True, metavar="MATCHER",
                     help="e.g. alertname=FloodLevel or device_id=~pa-manggarai|pa-karet")
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--duration", help="how long, e.g. 2h, 90m, 1d")
    until.add_argument("--until", dest="ends_at", help="RFC 3339, e.g. 2024-01-31T18:00:00+07:00")
    add.add_argument("--start", dest="starts_at", help="RFC 3339 (default: now)")
    add.add_argument("--comment", required=True, help="why: kept with the silence")
    add.add_argument("--by", help="who silences (default: your user name)")
    listing = action(group, "list", _silences_list, "active and pending silences")
    listing.add_argument("--expired", action="store_true", help="expired silences too")
    expire = action(group, "expire", _silences_expire, "end a silence now")
    expire.add_argument("id")


def _api_client(args: argparse.Namespace) -> ApiClient:
    http = _settings(args).http
    return ApiClient(args.url or base_url(http), http.token)


def _show(args: argparse.Namespace, data: Any, table: Callable[[Any], str]) -> int:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if args.json else table(data))
    return 0


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "siaga-cli"


def _alerts_list(args: argparse.Namespace) -> int:
    return _show(args, _api_client(args).alerts(args.status, args.match, args.limit),
                 format_alerts)


def _alerts_show(args: argparse.Namespace) -> int:
    return _show(args, _api_client(args).alert(args.fingerprint), format_alert)


def _alerts_ack(args: argparse.Namespace) -> int:
    acked = _api_client(args).acknowledge(args.fingerprint, _who(args), args.comment)
    return _show(args, acked, format_alert)


def _silences_add(args: argparse.Namespace) -> int:
    silence = _api_client(args).add_silence(
        args.match, _who(args), args.comment, duration=args.duration, ends_at=args.ends_at,
        starts_at=args.starts_at)
    return _show(args, silence, lambda s: f"silence {s['id']} {s['state']} until {s['ends_at']}")


def _silences_list(args: argparse.Namespace) -> int:
    return _show(args, _api_client(args).silences(args.expired), format_silences)


def _silences_expire(args: argparse.Namespace) -> int:
    silence = _api_client(args).expire_silence(args.id)
    return _show(args, silence, lambda s: f"silence {s['id']} expired at {s['ends_at']}")


def _mqtt_login(settings: Settings) -> str:
    mqtt = settings.mqtt
    tls = f"TLS, CA {mqtt.ca_file or 'of the system'}" if mqtt.tls else "no TLS"
    return f" ({tls}, user {mqtt.username})" if mqtt.username else f" ({tls}, anonymous)"


def _provision_parsers(sub: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """`siaga broker init` and `siaga devices add`: credentials at the broker."""
    broker = sub.add_parser("broker", help="the broker's password and ACL files")
    group = broker.add_subparsers(required=True, metavar="ACTION")
    init = group.add_parser("init", help="write DIR/siaga.passwd and DIR/siaga.acl for the "
                                         "service user and every catalog device")
    init.set_defaults(command=_broker_init)
    config_option(init)
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument("--service-user", default=SERVICE_USER)
    init.add_argument("--force", action="store_true", help="replace existing files")

    devices = sub.add_parser("devices", help="provision devices")
    group = devices.add_subparsers(required=True, metavar="ACTION")
    add = group.add_parser("add", help="add a device to the site catalog and give it broker "
                                       "credentials; prints what the device needs")
    add.set_defaults(command=_devices_add)
    config_option(add)
    add.add_argument("id")
    add.add_argument("--kind", required=True, choices=[kind.value for kind in Kind])
    add.add_argument("--name", help="a human name (default: the id)")
    add.add_argument("--lat", type=float, default=0.0)
    add.add_argument("--lon", type=float, default=0.0)
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")


def _broker_init(args: argparse.Namespace) -> int:
    passwords = init_broker(args.dir, _settings(args), service_user=args.service_user,
                            force=args.force)
    folder = args.dir.resolve()
    print(f"wrote {folder / 'siaga.passwd'} and {folder / 'siaga.acl'} "
          f"({len(passwords) - 1} devices). Passwords, shown once:")
    for user, password in passwords.items():
        print(f"  {user:<24} {password}")
    print(f"In mosquitto.conf: password_file {folder / 'siaga.passwd'}\n"
          f"                   acl_file {folder / 'siaga.acl'}\n"
          f"In siaga.yaml: broker.password_file / broker.acl_file as above, and the service's\n"
          f"  SIAGA_MQTT_URL=mqtt://{args.service_user}:PASSWORD@HOST:1883")
    return 0


def _devices_add(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for label in args.label:
        key, equals, value = label.partition("=")
        if not equals:
            raise ProvisionError(f"--label {label!r}: expected KEY=VALUE")
        labels[key] = value
    settings = _settings(args)
    device, password = add_device(settings, NewDevice(args.id, args.kind, args.name, args.lat,
                                                      args.lon, labels))
    print(device_sheet(settings, device, password))
    return 0
