"""The best channel: which of a cascade's reachable channels a customer answers most.

Learned per customer from the ledger: of the messages sent on a channel in the last
``WINDOW``, how many were read (an e-mail opened, a push or messenger message read). The
estimate is the smoothed read rate ``(reads + 1) / (sent + 3)``: a Beta(1, 2) prior, so a
channel the customer never got a message on counts as reading a third of the time, and a
channel ignored several times falls below that. With no history every channel ties and the
cascade's own order (cheapest first) stands; a channel goes first only when its estimate is
strictly higher than every channel before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

PRIOR_READS = 1.0
PRIOR_MISSES = 2.0
WINDOW = timedelta(days=90)

# (messages sent on the channel, of them read) per channel
Engagement = Mapping[str, tuple[int, int]]


def read_rate(sent: Any, reads: Any) -> Any:
    """The smoothed read rate of a channel (numbers, or numpy arrays of them)."""
    return (reads + PRIOR_READS) / (sent + PRIOR_READS + PRIOR_MISSES)


def best_index(channels: Sequence[str], engagement: Engagement | None) -> int:
    """The position of the channel to use first among reachable ``channels`` (in cascade
    order): the first with the highest smoothed read rate."""
    if not engagement or len(channels) < 2:
        return 0
    best, best_rate = 0, read_rate(*engagement.get(channels[0], (0, 0)))
    for index in range(1, len(channels)):
        rate = read_rate(*engagement.get(channels[index], (0, 0)))
        if rate > best_rate:
            best, best_rate = index, rate
    return best
