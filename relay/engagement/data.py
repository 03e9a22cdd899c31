"""The data the rules need, loaded offline: :class:`EngagementData`.

Bundled files live in ``relay/engagement/data/`` (each names its version and sources).
``engagement.data_dir`` points at a directory of fresher files an admin downloads; a
file found there replaces the bundled one of the same name:

- ``useragents.json`` — the curated email user-agent table (our format);
- ``apple_relay.csv`` (Apple's ``egress-ip-ranges.csv`` as published) or ``.json``;
- ``microsoft365.json`` (our format or the Microsoft 365 endpoints JSON) or ``.txt``;
- ``cloud*.json`` / ``cloud*.txt`` — any number (AWS ``ip-ranges.json``, GCP
  ``cloud.json``, text lists); all of them together form the cloud set.

Where no such file is given, the network sets come from the MISP warning lists that the
maintained ``pymispwarninglists`` package ships (offline, versioned with the package):
``apple`` (Apple's networks), ``microsoft-office365-ip``, and ``amazon-aws``,
``google-gcp`` and ``microsoft-azure`` for the cloud set.
"""

from __future__ import annotations

import functools
import importlib.resources
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

from relay.engagement.networks import NetworkSet, read_networks
from relay.engagement.useragents import UATable

BUNDLED_DIR = Path(__file__).with_name("data")


@dataclass
class EngagementData:
    ua_table: UATable
    apple_relay: NetworkSet = field(default_factory=NetworkSet)
    microsoft365: NetworkSet = field(default_factory=NetworkSet)
    cloud: NetworkSet = field(default_factory=NetworkSet)
    #: Which file each part came from (for logs and ``trackrelay`` diagnostics).
    files: dict[str, str] = field(default_factory=dict)


#: MISP warning lists (pymispwarninglists) used where an admin gave no file of their own.
WARNINGLISTS: dict[str, tuple[str, ...]] = {
    "apple_relay": ("apple",),
    "microsoft365": ("microsoft-office365-ip",),
    "cloud": ("amazon-aws", "google-gcp", "microsoft-azure"),
}


def warninglist(name: str) -> NetworkSet | None:
    """The CIDR list ``name`` from pymispwarninglists, or None if it is not installed."""
    try:
        path = (importlib.resources.files("pymispwarninglists") / "data" / "misp-warninglists"
                / "lists" / name / "list.json")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, ValueError):
        return None
    if doc.get("type") != "cidr":
        return None
    nets = []
    for value in doc.get("list", []):
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            continue  # one bad entry in a third-party list must not stop start-up
    return NetworkSet(nets, name=f"{name} (MISP warninglist {doc.get('version', '?')})")


def _with_warninglists(part: str, base: NetworkSet, files: dict[str, str]) -> NetworkSet:
    found = [w for w in (warninglist(n) for n in WARNINGLISTS[part]) if w is not None]
    for extra in found:
        base = base | extra
    if found:
        files[part] = ", ".join(([files[part]] if part in files else [])
                                + [w.name for w in found])
    base.name = part
    return base


def _pick(name: str, suffixes: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for d in dirs:  # admin's directory first
        for suffix in suffixes:
            p = d / f"{name}{suffix}"
            if p.is_file():
                return p
    return None


def load_data(data_dir: str | Path | None = None) -> EngagementData:
    """Load the bundled data, overridden file by file from ``data_dir``.

    Raises ``ValueError`` naming the file and entry that is wrong.
    """
    dirs = [Path(data_dir)] if data_dir else []
    dirs.append(BUNDLED_DIR)
    files: dict[str, str] = {}
    ua_path = _pick("useragents", (".json",), dirs)
    if ua_path is None:
        raise ValueError(f"no useragents.json in {', '.join(map(str, dirs))}")
    files["useragents"] = str(ua_path)
    table = UATable.load(ua_path)
    sets: dict[str, NetworkSet] = {}
    admin = [Path(data_dir)] if data_dir else []
    for name in ("apple_relay", "microsoft365"):
        p = _pick(name, (".csv", ".json", ".txt"), dirs)
        sets[name] = read_networks(p) if p else NetworkSet(name=name)
        if p:
            files[name] = str(p)
        if not (admin and _pick(name, (".csv", ".json", ".txt"), admin)):
            sets[name] = _with_warninglists(name, sets[name], files)
    cloud_files: list[Path] = []
    if data_dir:
        cloud_files = sorted(
            p for p in Path(data_dir).glob("cloud*") if p.suffix in (".json", ".txt", ".csv")
        )
    own_cloud = bool(cloud_files)
    if not cloud_files:
        cloud_files = [BUNDLED_DIR / "cloud.json"]
    cloud = NetworkSet(name="cloud")
    for p in cloud_files:
        cloud = cloud | read_networks(p)
    cloud.name = "cloud"
    files["cloud"] = ", ".join(map(str, cloud_files))
    if not own_cloud:
        cloud = _with_warninglists("cloud", cloud, files)
    return EngagementData(table, sets["apple_relay"], sets["microsoft365"], cloud, files)


@functools.lru_cache(maxsize=4)
def cached_data(data_dir: str = "") -> EngagementData:
    """``load_data`` once per directory per process."""
    return load_data(data_dir or None)
