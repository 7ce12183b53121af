"""A call task for a person: "sending" puts the call in the task list (the dispatcher writes
the task in the same transaction as the delivery's outcome); the outcome the caller records
is the delivery report."""

from __future__ import annotations

from tactful.messaging.channels.base import Capabilities, Channel, OutboundMessage, SendResult


class CallTaskChannel(Channel):
    """No provider: the task list is the channel, so repeating is harmless."""

    channel = "call"
    kind = "call"
    capabilities = Capabilities(reports_delivery=True, reports_reads=False, idempotency_keys=True)

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult.sent(f"call-task:{message.delivery_id}")
