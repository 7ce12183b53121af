"""Channel adapters, one module each, behind the interface in ``base``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tactful.messaging.channels.base import Channel
from tactful.messaging.channels.call import CallTaskChannel
from tactful.messaging.channels.email import SmtpChannel
from tactful.messaging.channels.generic import GenericSmsChannel
from tactful.messaging.channels.push import FcmChannel
from tactful.messaging.channels.telegram import TelegramChannel
from tactful.messaging.channels.twilio import TwilioChannel
from tactful.messaging.channels.viber import ViberChannel
from tactful.messaging.channels.webhook import WebhookChannel

# provider kind -> (channel, configuration keys it requires)
PROVIDER_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "smtp": ("email", ("host", "port")),
    "sms_generic": ("sms", ("endpoint",)),
    "twilio": ("sms", ("account_sid", "auth_token")),
    "fcm": ("push", ("project_id",)),  # and access_token or service_account
    "viber": ("viber", ("auth_token",)),
    "telegram": ("telegram", ("bot_token",)),
    "webhook": ("webhook", ("url",)),
    "call": ("call", ()),
}

_HTTP: dict[str, type[Any]] = {
    "sms_generic": GenericSmsChannel,
    "twilio": TwilioChannel,
    "fcm": FcmChannel,
    "viber": ViberChannel,
    "telegram": TelegramChannel,
    "webhook": WebhookChannel,
}

HTTP_KINDS = frozenset(_HTTP)


def build_channel(
    *,
    provider_id: int,
    kind: str,
    config: Mapping[str, Any],
    concurrency: int,
    version: str,
    client: httpx.AsyncClient | None,
) -> Channel:
    """The adapter of a configured provider (HTTP providers send through ``client``; without
    one the adapter only reads callbacks)."""
    if kind == "smtp":
        return SmtpChannel(config, pool_key=f"{provider_id}:{version}", concurrency=concurrency)
    if kind == "call":
        return CallTaskChannel(config)
    adapter = _HTTP.get(kind)
    if adapter is None:
        raise ValueError(f"unknown provider kind {kind!r}")
    channel: Channel = adapter(config, client)
    return channel
