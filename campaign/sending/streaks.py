"""Failures in a row on one connection that say the fault is not the lead's.

One message left in doubt or one refused recipient is that message's story. Several in a
row are the relay's: a server that takes messages and never answers, or a relay that
answers every recipient with the same permanent refusal (relaying denied, an account
blocked). Marking each lead bounced, or leaving one message after another in doubt, would
do lasting harm, so the dispatcher stops the run once a streak is long enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Messages in a row left in doubt (sent to their end, no answer) after which a connection
# stops: the server is failing, and each further message would be one more in doubt.
IN_DOUBT_STREAK = 3
# Different recipients in a row refused with the same permanent answer after which the
# refusal is taken for the sender's (a relay denying relaying, a blocked account), not theirs.
SAME_REFUSAL_STREAK = 3


@dataclass
class Streaks:
    """One connection's failures in a row; a message sent ends every streak."""

    in_doubt: int = 0
    refusal: str | None = None  # the last permanent refusal's words, the recipient left out
    refused: set[str] = field(default_factory=set)  # whom it refused, in lower case

    def sent(self) -> None:
        self.in_doubt, self.refusal, self.refused = 0, None, set()

    def left_in_doubt(self) -> bool:
        """One more message in doubt; True once the connection must stop."""
        self.in_doubt += 1
        return self.in_doubt >= IN_DOUBT_STREAK

    def refused_alike(self, recipient: str, refusal: str) -> bool:
        """A permanent refusal of `recipient`; True once enough different recipients in a
        row got it word for word, their own address left out (servers often quote it)."""
        words = re.sub(re.escape(recipient), "<recipient>", refusal, flags=re.IGNORECASE)
        if words != self.refusal:
            self.refusal, self.refused = words, set()
        self.refused.add(recipient.lower())
        return len(self.refused) >= SAME_REFUSAL_STREAK
