"""A private Dovecot IMAP server for tests: its own config, users, mail and ports under a
temporary folder, started in the foreground by the test and stopped after it. Mail is
put into the mailbox with IMAP APPEND (as a mail client or an MTA's delivery would leave
it). With ``tls=True`` it listens with implicit TLS on a certificate from ``trustme``.
Needs Debian's ``dovecot-imapd`` (CI installs it) and root (Dovecot drops to its users).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import aioimaplib
import trustme

from tests.conftest import free_port, wait_listening

USER, PASSWORD = "replies@example.com", "imap-test-password"


class Dovecot:
    def __init__(self, tls: bool = False, introspection_url: str = "") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="trackrelay-dovecot-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.tls = tls
        #: OAuth2 (XOAUTH2) logins checked by this token introspection endpoint (RFC 7662).
        self.introspection_url = introspection_url
        self.ca: trustme.CA | None = None
        self.ca_file = self.root / "ca.pem"
        self.proc: asyncio.subprocess.Process | None = None

    def _config(self) -> str:
        r = self.root
        for sub in ("run", "state", "home"):
            (r / sub).mkdir()
        shutil.chown(r / "home", "nobody")
        (r / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        ssl = "ssl = no\n"
        listener = f"inet_listener imap {{\n    port = {self.port}\n  }}\n" \
                   "  inet_listener imaps {\n    port = 0\n  }\n"
        if self.tls:
            self.ca = trustme.CA()
            cert = self.ca.issue_cert("127.0.0.1", "localhost")
            cert.private_key_and_cert_chain_pem.write_to_path(str(r / "server.pem"))
            self.ca.cert_pem.write_to_path(str(self.ca_file))
            ssl = (f"ssl = required\nssl_cert = <{r}/server.pem\nssl_key = <{r}/server.pem\n")
            listener = "inet_listener imap {\n    port = 0\n  }\n" \
                       f"  inet_listener imaps {{\n    port = {self.port}\n    ssl = yes\n  }}\n"
        oauth2 = ""
        if self.introspection_url:
            (r / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {self.introspection_url}\n"
                "username_attribute = username\nactive_attribute = active\n"
                "active_value = true\n")
            oauth2 = ("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                      f"  args = {r}/oauth2.conf.ext\n}}\n")
        return f"""base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login{" xoauth2" if self.introspection_url else ""}
first_valid_uid = 1
mail_uid = nobody
mail_gid = nogroup
mail_location = maildir:{r}/home/%u/Maildir
{oauth2}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/users
}}
userdb {{
  driver = static
  args = home={r}/home/%u
}}
service imap-login {{
  {listener}}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""

    async def start(self) -> None:
        conf = self.root / "dovecot.conf"
        conf.write_text(self._config())
        self.proc = await asyncio.create_subprocess_exec(
            "dovecot", "-F", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            await wait_listening(self.port)
        except AssertionError:
            raise AssertionError(self.log()) from None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def client(self) -> aioimaplib.IMAP4:
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(host="127.0.0.1", port=self.port,
                                                            ssl_context=ctx)
        else:
            client = aioimaplib.IMAP4(host="127.0.0.1", port=self.port)
        await client.wait_hello_from_server()
        assert (await client.login(USER, PASSWORD)).result == "OK"
        return client

    async def append(self, raw: bytes, folder: str = "INBOX") -> None:
        client = await self.client()
        try:
            if folder != "INBOX":
                await client.create(folder)
            assert (await client.append(raw, mailbox=folder)).result == "OK"
        finally:
            await client.logout()

    async def flags(self, folder: str = "INBOX") -> list[bytes]:
        """The flags of every message in ``folder`` (read without changing them)."""
        client = await self.client()
        try:
            await client.select(folder)  # FETCH (FLAGS) sets no flag
            fetched = await client.fetch("1:*", "(FLAGS)")
            return [line for line in fetched.lines if isinstance(line, bytes)
                    and b"FLAGS" in line]
        finally:
            await client.logout()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)
        subprocess.run(["pkill", "-f", f"dovecot -F -c {self.root}"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
