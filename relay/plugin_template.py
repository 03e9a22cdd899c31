"""``trackrelay new-plugin NAME``: a working plugin package to start from.

It writes ``trackrelay-NAME/`` with a ``pyproject.toml`` that registers the module under
the ``trackrelay`` entry-point group, the module itself (a header stamp whose value comes
from ``[plugins.NAME]``, a startup check that raises ``ConfigError`` for a bad setting),
a test that runs it through ``trackrelay rewrite``, and a README. ``pip install -e
trackrelay-NAME`` and it is loaded; ``trackrelay plugins`` lists it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from relay.config import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "trackrelay-{dash}"
version = "0.1.0"
description = "A trackrelay plugin: {name}"
requires-python = ">=3.11"
dependencies = ["trackrelay"]

[project.entry-points.trackrelay]
{name} = "trackrelay_{name}"

[tool.setuptools]
py-modules = ["trackrelay_{name}"]
'''

MODULE = '''"""trackrelay plugin ``{name}``: stamps every message it forwards with a header.

Settings, in trackrelay's config file::

    [plugins.{name}]
    header = "X-Stamped-By"     # the header's name (default X-{title})
    value = "our relay"         # its value (default "{name}")

Every hook trackrelay offers is listed in its README ("Writing a plugin") and in
``relay/hookspecs.py``; a hook may be a plain function or a coroutine.
"""

from __future__ import annotations

import re

from relay import hookimpl
from relay.app import App
from relay.config import ConfigError
from relay.message import MessageDraft

SETTINGS = {{"header": "X-{title}", "value": "{name}"}}


@hookimpl
def trackrelay_check_config(app: App) -> None:
    """Check the settings (``trackrelay check-config`` runs this too): a bad one stops
    start-up with this message."""
    settings = app.plugin_config("{name}")
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"plugins.{name}.{{sorted(unknown)[0]}}: unknown key "
                          f"(known: {{', '.join(SETTINGS)}})")
    header = str(settings.get("header", SETTINGS["header"]))
    if not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ConfigError(f"plugins.{name}.header: not a header name: {{header!r}}")


@hookimpl
def trackrelay_startup(app: App) -> None:
    """Read the settings once, after they passed the check."""
    settings = app.plugin_config("{name}")
    SETTINGS.update(header=str(settings.get("header", SETTINGS["header"])),
                    value=str(settings.get("value", SETTINGS["value"])))


@hookimpl
def trackrelay_transform_message(message: MessageDraft) -> None:
    """After DATA, before forwarding: add the header (every other byte stays as it came)."""
    message.add_header(SETTINGS["header"], SETTINGS["value"])
'''

TEST = '''"""Runs the plugin through ``trackrelay rewrite``: what the relay would forward."""

import subprocess
import sys
from pathlib import Path

MESSAGE = b"From: a@example.com\\r\\nTo: b@example.org\\r\\nSubject: hi\\r\\n\\r\\nhello\\r\\n"


def test_the_header_is_added(tmp_path: Path) -> None:
    config = tmp_path / "trackrelay.toml"
    config.write_text('[plugins.{name}]\\nvalue = "tested"\\n')
    out = subprocess.run([sys.executable, "-m", "relay.cli", "rewrite", "--config",
                          str(config)], input=MESSAGE, capture_output=True, check=True)
    assert b"X-{title}: tested\\r\\n" in out.stdout
    assert out.stdout.endswith(b"\\r\\n\\r\\nhello\\r\\n")
'''

README = '''# trackrelay-{dash}

A [trackrelay](https://example.invalid/trackrelay) plugin made with `trackrelay
new-plugin {name}`.

```sh
pip install -e .          # trackrelay loads it at its next start
trackrelay plugins        # lists {name}, enabled
python -m pytest          # runs it through `trackrelay rewrite`
```

Settings go in trackrelay's config under `[plugins.{name}]` (see `trackrelay_{name}.py`).
'''


def create(name: str, directory: Path) -> Path:
    """Write the package; its folder. Refuses a bad name or an existing folder."""
    if not _NAME.match(name):
        raise ConfigError(f"NAME: lower-case letters, digits and '_', starting with a "
                          f"letter, got {name!r}")
    target = directory / f"trackrelay-{name.replace('_', '-')}"
    if target.exists():
        raise ConfigError(f"--dir: {target} exists already")
    fields = {"name": name, "dash": name.replace("_", "-"),
              "title": "".join(w.capitalize() for w in name.split("_"))}
    (target / "tests").mkdir(parents=True)
    (target / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (target / f"trackrelay_{name}.py").write_text(MODULE.format(**fields))
    (target / "tests" / f"test_{name}.py").write_text(TEST.format(**fields))
    (target / "README.md").write_text(README.format(**fields))
    return target


def cmd_new_plugin(args: argparse.Namespace) -> int:
    target = create(args.name, Path(args.dir))
    print(f"{target}: pip install -e {target} && trackrelay plugins")
    return 0
