"""`siaga reports keys add|list|revoke` and `siaga reports stats`: the report book at hand.

These open the book the service uses (SQLite in the data directory, or PostgreSQL at
reports.database_url) directly, like `siaga deadletters`: a key added here works at once in
a running service, which looks keys up in the book on each report.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from reports.book import ApiKey, ReportBook
from reports.stats import format_table
from siaga.settings import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_parsers(sub: Any, config_option: Callable[[argparse.ArgumentParser], None],
                settings_of: SettingsOf) -> None:
    reports = sub.add_parser("reports", help="residents' reports: API keys and statistics")
    group = reports.add_subparsers(required=True, metavar="ACTION")

    keys = group.add_parser("keys", help="API keys of the apps and channels that send reports")
    key_group = keys.add_subparsers(required=True, metavar="ACTION")
    add = key_group.add_parser("add", help="create a key for an app or channel; it is printed "
                                           "once, alone on the last line (store it now)")
    add.add_argument("name", help="the app or channel, e.g. qlue or kelurahan-menteng")
    add.add_argument("--rate-limit", type=int, metavar="N", dest="rate_limit",
                     help="this key's reports a minute (default: reports.rate_limit_per_minute)")
    add.set_defaults(command=lambda args: _keys_add(args, settings_of(args)))
    listing = key_group.add_parser("list", help="the keys' names, hints and states")
    listing.set_defaults(command=lambda args: _keys_list(args, settings_of(args)))
    revoke = key_group.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")
    revoke.set_defaults(command=lambda args: _keys_revoke(args, settings_of(args)))

    stats = group.add_parser("stats", help="a year's figures, as the CRM published them")
    stats.add_argument("--year", type=int, required=True)
    stats.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
    stats.set_defaults(command=lambda args: _stats(args, settings_of(args)))
    for parser in (add, listing, revoke, stats):
        config_option(parser)


def _book(settings: Settings) -> ReportBook:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return ReportBook.open(settings.report_book, settings.data_dir)


def _keys_add(args: argparse.Namespace, settings: Settings) -> int:
    with _book(settings) as book:
        key = book.add_key(args.name, args.rate_limit)
        print(f"API key for {args.name!r} ({book.describe()}); it is shown only now, and "
              "stored hashed. Apps send it as the api_key field:")
        print(key)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    with _book(settings) as book:
        keys = book.list_keys()
    if not keys:
        print("no API keys yet: siaga reports keys add NAME")
        return 0
    print(f"{'NAME':<32} {'HINT':<6} {'CREATED':<20} {'LIMIT/MIN':>9}  STATE")
    for key in keys:
        limit = ("default" if key.rate_limit_per_minute is None
                 else f"{key.rate_limit_per_minute:,}")
        print(f"{key.name:<32} {key.hint + '…':<6} {_when(key.created_ns):<20} {limit:>9}  "
              f"{_state(key)}")
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _book(settings) as book:
        key = book.revoke_key(args.name)
    print(f"revoked the API key of {key.name!r}: reports sent with it are refused from now on")
    return 0


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    with _book(settings) as book:
        counted = book.stats(args.year)
    if args.json:
        print(orjson.dumps(counted.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_table(counted))
    return 0


def _state(key: ApiKey) -> str:
    return "active" if key.revoked_ns is None else f"revoked {_when(key.revoked_ns)}"


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ns / 1e9))
