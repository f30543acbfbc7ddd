"""The channels notifications travel by: e-mail over SMTP (STARTTLS), and SMS through a
gateway behind the `SmsGateway` port (one implementation: an HTTP gateway).

A channel either delivers, or raises `ChannelDown` (try again later: the server or the
network failed) or `Undeliverable` (the address is refused for good: trying again would not
help). Each message carries an id derived from its schedule key, the same at every attempt,
so that a receiver can drop a second copy (at-least-once delivery, notify/scheduler.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

import httpx2 as httpx


@dataclass(frozen=True, slots=True)
class Message:
    """One message to one address; `ref` is the same at every attempt of a notification."""

    to: str
    subject: str
    body: str
    language: str
    ref: str


class ChannelDown(Exception):
    """The channel could not deliver now; the message is to be tried again."""


class Undeliverable(Exception):
    """The channel refused the address for good."""


class Channel(Protocol):
    """Delivers messages to one kind of address (e-mail, phone)."""

    async def send(self, message: Message) -> None:
        """Deliver `message`; ChannelDown or Undeliverable (see the module docstring)."""


def message_ref(key: str) -> str:
    """The message id of the notification scheduled under `key` (the key holds ids: it is
    hashed, so receivers do not learn them)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str = ""
    password: str = ""
    starttls: bool = True  # refuse to send over a connection that is not encrypted
    ca_file: str | None = None  # trusted certificates of the server; None: the system's
    timeout: float = 30.0


class SmtpChannel:
    """E-mail through an SMTP relay (submission port, STARTTLS before anything is sent)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._tls = ssl.create_default_context(cafile=settings.ca_file)

    def email(self, message: Message) -> EmailMessage:
        """The e-mail of `message`: plain text, marked as sent by a machine (RFC 3834)."""
        email = EmailMessage()
        email["From"] = self.settings.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(usegmt=True)
        domain = self.settings.sender.rpartition("@")[2].strip("> ") or "localhost"
        email["Message-ID"] = f"<{message.ref}@{domain}>"
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(message.body)
        email["Content-Language"] = message.language  # after set_content, which clears Content-*
        return email

    async def send(self, message: Message) -> None:
        if not message.to.isascii():
            # Needs SMTPUTF8, which few relays offer: it would fail at every attempt.
            raise Undeliverable("the e-mail address is not ASCII")
        await asyncio.to_thread(self._send, self.email(message))

    def _submit(self, email: EmailMessage) -> smtplib.SMTP:
        """Hand `email` to the relay; the connection, still open, once it answered 250 to the
        DATA (closed if anything before fails)."""
        settings = self.settings
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        try:
            smtp.ehlo()
            if settings.starttls:
                # Without STARTTLS the message would cross the network in clear: not sent.
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if settings.user:
                smtp.login(settings.user, settings.password)
            smtp.send_message(email)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _send(self, email: EmailMessage) -> None:
        try:
            accepted = self._submit(email)
        except smtplib.SMTPRecipientsRefused as refused:
            codes = [code for code, _ in refused.recipients.values()]
            if all(500 <= code < 600 for code in codes):
                raise Undeliverable(f"the SMTP server refused the recipient ({codes[0]})") from None
            raise ChannelDown(f"the SMTP server deferred the recipient ({codes[0]})") from None
        except smtplib.SMTPNotSupportedError:
            raise ChannelDown("the SMTP server does not offer STARTTLS") from None
        except smtplib.SMTPDataError as error:
            if 500 <= error.smtp_code < 600:  # the message itself is refused: it will not change
                raise Undeliverable(f"the SMTP server refused the message ({error.smtp_code})") from None
            raise ChannelDown(f"the SMTP server answered {error.smtp_code}") from None
        except smtplib.SMTPResponseException as error:
            raise ChannelDown(f"the SMTP server answered {error.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as error:  # connection, TLS, timeouts
            raise ChannelDown(f"the SMTP server is unreachable ({type(error).__name__})") from None
        # The relay has the message: whatever QUIT gets (an error, a timeout) must not make it
        # go again (a second copy is the one thing the schedule cannot take back).
        try:
            accepted.quit()
        except (smtplib.SMTPException, OSError):
            accepted.close()


class SmsGateway(Channel, Protocol):
    """The port of SMS providers: a Channel for phone numbers (E.164). A provider's own API
    is one more implementation of it, chosen where notify/runner.py builds the channels."""


# Gateway answers that say nothing of the message: a timeout, a rate limit, or a token or URL
# that is wrong (the operator fixes it; meanwhile the notices wait).
_NOT_THE_MESSAGE = frozenset({401, 403, 404, 408, 429})


class HttpSmsGateway:
    """An SMS gateway reached over HTTPS: each message is `POST url` with JSON `{"to",
    "text", "reference"}` and a bearer token; 2xx is accepted, 4xx refused for good (but 408
    and 429, and 401, 403, 404: the gateway's token or URL is wrong, for the operator to fix),
    anything else or no answer is tried again."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    async def send(self, message: Message) -> None:
        payload = {"to": message.to, "text": message.body, "reference": message.ref}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                answer = await client.post(self.url, json=payload,
                                           headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as error:
            raise ChannelDown(f"the SMS gateway is unreachable ({type(error).__name__})") from None
        if 200 <= answer.status_code < 300:
            return
        if 400 <= answer.status_code < 500 and answer.status_code not in _NOT_THE_MESSAGE:
            raise Undeliverable(f"the SMS gateway refused the message ({answer.status_code})")
        raise ChannelDown(f"the SMS gateway answered {answer.status_code}")
