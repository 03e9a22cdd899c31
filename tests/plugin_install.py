"""Install a plugin package for a test the way pip does, without pip: its module and a
``.dist-info`` folder with its ``trackrelay`` entry point, in a folder put on
``sys.path`` (and on ``PYTHONPATH`` for processes the test starts)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_distribution(site: Path, dist: str, entry_points: dict[str, str],
                       modules: dict[str, str]) -> None:
    """``modules``: file name -> source; ``entry_points``: plugin name -> module."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / name).write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[trackrelay]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    (info / "RECORD").write_text("")


@contextmanager
def on_path(site: Path) -> Iterator[None]:
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for name in [m for m, mod in sys.modules.items()
                     if str(getattr(mod, "__file__", "") or "").startswith(str(site))]:
            del sys.modules[name]
        importlib.invalidate_caches()
