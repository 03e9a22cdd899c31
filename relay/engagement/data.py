"""The data the rules need, loaded offline: :class:`EngagementData`.

Bundled files live in ``relay/engagement/data/`` (each names its version and sources).
``engagement.data_dir`` points at a directory of fresher files an admin downloads; a
file found there replaces the bundled one of the same name:

- ``useragents.json`` — the curated email user-agent table (our format);
- ``apple_relay.csv`` (Apple's ``egress-ip-ranges.csv`` as published) or ``.json``;
- ``microsoft365.json`` (our format or the Microsoft 365 endpoints JSON) or ``.txt``;
- ``cloud*.json`` / ``cloud*.txt`` — any number (AWS ``ip-ranges.json``, GCP
  ``cloud.json``, text lists); all of them together form the cloud set.
"""

from __future__ import annotations

import functools
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
    for name in ("apple_relay", "microsoft365"):
        p = _pick(name, (".csv", ".json", ".txt"), dirs)
        sets[name] = read_networks(p) if p else NetworkSet(name=name)
        if p:
            files[name] = str(p)
    cloud_files: list[Path] = []
    if data_dir:
        cloud_files = sorted(
            p for p in Path(data_dir).glob("cloud*") if p.suffix in (".json", ".txt", ".csv")
        )
    if not cloud_files:
        cloud_files = [BUNDLED_DIR / "cloud.json"]
    cloud = NetworkSet(name="cloud")
    for p in cloud_files:
        cloud = cloud | read_networks(p)
    cloud.name = "cloud"
    files["cloud"] = ", ".join(map(str, cloud_files))
    return EngagementData(table, sets["apple_relay"], sets["microsoft365"], cloud, files)


@functools.lru_cache(maxsize=4)
def cached_data(data_dir: str = "") -> EngagementData:
    """``load_data`` once per directory per process."""
    return load_data(data_dir or None)
