"""The channels (notify/channels.py) against real servers on loopback: SMTP with STARTTLS
(aiosmtpd, a certificate made here), and the HTTP SMS gateway."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fhir_server.notify.channels import (ChannelDown, HttpSmsGateway, Message, SmtpChannel,
                                         SmtpSettings, Undeliverable, message_ref)
from fhir_server.settings import Settings
from tests.notify.mail import SmtpServer, free_port

pytestmark = pytest.mark.anyio
MESSAGE = Message("dr.martin@example.org", "New message", "You have a new message on the "
                  "platform: https://portal.example/", "en", message_ref("referral/1/1/Practitioner/2"))


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tmp_path) as server:
        yield server


def channel(server: SmtpServer, **options: Any) -> SmtpChannel:
    return SmtpChannel(SmtpSettings("127.0.0.1", server.port, "platform@oncotrials.example",
                                    ca_file=str(server.ca_file), timeout=5, **options))


async def test_an_email_is_sent_over_starttls(smtp_server: SmtpServer) -> None:
    await channel(smtp_server).send(MESSAGE)
    [mail] = smtp_server.mailbox.received
    assert smtp_server.mailbox.encrypted == [True]
    assert mail["X-Envelope-To"] == "dr.martin@example.org"
    assert mail["From"] == "platform@oncotrials.example" and mail["Subject"] == "New message"
    assert mail["Message-ID"] == f"<{MESSAGE.ref}@oncotrials.example>"
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Content-Language"] == "en"
    assert mail.get_payload(decode=True).decode().strip() == MESSAGE.body
    assert "referral" not in mail.as_string()  # the key's ids do not leak into the message id


async def test_a_server_certificate_not_trusted_is_refused(smtp_server: SmtpServer, tmp_path: Path) -> None:
    untrusted = SmtpChannel(SmtpSettings("127.0.0.1", smtp_server.port, "p@example.org", timeout=5))
    with pytest.raises(ChannelDown):
        await untrusted.send(MESSAGE)
    assert smtp_server.mailbox.received == []


async def test_a_relay_without_starttls_gets_nothing(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, offer_starttls=False) as plain:
        with pytest.raises(ChannelDown, match="STARTTLS"):
            await channel(plain).send(MESSAGE)
        assert plain.mailbox.received == []


async def test_a_deferring_or_absent_server_is_down_not_final(smtp_server: SmtpServer) -> None:
    smtp_server.mailbox.failures = 1
    with pytest.raises(ChannelDown, match="451"):
        await channel(smtp_server).send(MESSAGE)
    await channel(smtp_server).send(MESSAGE)
    assert len(smtp_server.mailbox.received) == 1
    nobody = SmtpChannel(SmtpSettings("127.0.0.1", free_port(), "p@example.org", timeout=2))
    with pytest.raises(ChannelDown, match="unreachable"):
        await nobody.send(MESSAGE)


class Gateway(BaseHTTPRequestHandler):
    """An SMS gateway answering the statuses in `answers`, recording what it got."""

    answers: list[int] = []
    got: list[tuple[dict[str, Any], str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.got.append((body, self.headers.get("Authorization", "")))
        self.send_response(self.answers.pop(0) if self.answers else 202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    Gateway.answers, Gateway.got = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms"
    server.shutdown()
    server.server_close()


async def test_an_sms_goes_to_the_gateway_with_its_reference(gateway: str) -> None:
    sms = Message("+33612345678", "", "Vous avez un nouveau message sur la plateforme : "
                  "https://portal.example/", "fr", "ref-1")
    await HttpSmsGateway(gateway, "secret-token").send(sms)
    assert Gateway.got == [({"to": "+33612345678", "text": sms.body, "reference": "ref-1"},
                            "Bearer secret-token")]


# 401, 403, 404: the gateway's token or URL is wrong, the operator's to fix: not the message's.
@pytest.mark.parametrize(("status", "error"), [(503, ChannelDown), (429, ChannelDown),
                                               (400, Undeliverable), (302, ChannelDown),
                                               (401, ChannelDown), (403, ChannelDown),
                                               (404, ChannelDown)])
async def test_the_gateway_answers_decide_between_later_and_never(
        gateway: str, status: int, error: type[Exception]) -> None:
    Gateway.answers = [status]
    with pytest.raises(error):
        await HttpSmsGateway(gateway, "t").send(MESSAGE)


async def test_an_absent_gateway_is_down() -> None:
    with pytest.raises(ChannelDown):
        await HttpSmsGateway(f"http://127.0.0.1:{free_port()}/sms", "t", timeout=2).send(MESSAGE)


async def test_a_message_refused_for_good_at_data_is_undeliverable(smtp_server: SmtpServer) -> None:
    """A 5xx answer to DATA (rejected as spam, too big) will not change: not retried."""
    async def reject(server: Any, session: Any, envelope: Any) -> str:
        return "554 5.7.1 Message rejected"
    smtp_server.mailbox.handle_DATA = reject  # type: ignore[method-assign]
    with pytest.raises(Undeliverable, match="554"):
        await channel(smtp_server).send(MESSAGE)


async def test_an_address_that_is_not_ascii_is_undeliverable(smtp_server: SmtpServer) -> None:
    """Relays seldom offer SMTPUTF8: such an address is not sent to (nor mistaken for a relay
    without STARTTLS, retried for ever)."""
    with pytest.raises(Undeliverable, match="ASCII"):
        await channel(smtp_server).send(Message("hélène@example.org", "s", "b", "fr", "r"))
    assert smtp_server.mailbox.received == []


@pytest.mark.parametrize("options", [
    {"smtp_host": "smtp.remote.example", "smtp_starttls": False},
    {"sms_gateway_url": "http://sms.example/send", "sms_gateway_token": "t"},
    {"sms_gateway_url": "ftp://sms.example/send"},
])
def test_a_relay_in_clear_is_refused_unless_on_this_host(options: dict[str, Any]) -> None:
    """Mail, passwords and bearer tokens do not cross a network in clear."""
    with pytest.raises(ValidationError, match="loopback"):
        Settings(**options)
    local = {k: v.replace("smtp.remote.example", "127.0.0.1").replace("sms.example", "localhost")
             if isinstance(v, str) else v for k, v in options.items()}
    if not local.get("sms_gateway_url", "").startswith("ftp"):
        Settings(**local)


def test_the_relay_password_and_gateway_token_never_show_in_settings() -> None:
    settings = Settings(smtp_password="hunter2-password", sms_gateway_token="gateway-token-42")
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    assert "hunter2-password" not in shown and "gateway-token-42" not in shown
