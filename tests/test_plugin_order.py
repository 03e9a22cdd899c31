"""The documented order of plugins: built-ins first by name, then installed plugins by
name; ``tryfirst``/``trylast`` move a plugin before or after all of them; at one offset
of a part, edits land in the order they were asked (the pixel before a footer)."""

from __future__ import annotations

from pathlib import Path

from relay.config import build_config
from relay.plugin_host import PluginHost
from tests.plugin_install import on_path, write_distribution
from tests.rewrite_support import html_only, make_app, rewrite

FOOTER = '''
from relay import hookimpl

@hookimpl{marker}
def trackrelay_edit_html(context, part):
    part.insert(part.body_insert_offset(), "<p id=footer-{name}>footer</p>", owner="{name}")
'''


def install(site: Path, name: str, marker: str = "") -> None:
    write_distribution(site, f"trackrelay-{name}", {name: f"trackrelay_{name}"},
                       {f"trackrelay_{name}.py": FOOTER.format(name=name, marker=marker)})


def call_order(host: PluginHost, hook: str) -> list[str]:
    impls = getattr(host.pm.hook, hook).get_hookimpls()
    return [impl.plugin_name for impl in reversed(impls)]  # pluggy calls the last first


def test_builtins_first_then_installed_plugins_by_name(tmp_path: Path) -> None:
    install(tmp_path, "zfooter")
    install(tmp_path, "afooter")
    install(tmp_path, "early", "(tryfirst=True)")
    install(tmp_path, "late", "(trylast=True)")
    with on_path(tmp_path):
        host = PluginHost(build_config({}, environ={}))
        order = call_order(host, "trackrelay_edit_html")
        builtins = [n for n in order if n not in ("early", "afooter", "zfooter", "late")]
        assert {"honeypot", "links", "pixel"} <= set(builtins)
        assert builtins == sorted(builtins)
        assert order == ["early", *builtins, "afooter", "zfooter", "late"]


async def test_the_pixel_lands_before_a_footer_at_body_end(tmp_path: Path) -> None:
    install(tmp_path, "zfooter")  # named after "pixel": built-ins come first anyway
    with on_path(tmp_path):
        app = make_app(tmp_path)
        app.host = PluginHost(app.config)  # every installed plugin, the built-ins too
        raw, ctx = await rewrite(app, html_only("<html><body><p>hi</p></body></html>",
                                                "8bit"))
    assert ctx.tracked
    out = raw.decode()
    pixel, footer = out.index("/o/"), out.index("footer-zfooter")
    assert pixel < footer < out.index("</body>")
