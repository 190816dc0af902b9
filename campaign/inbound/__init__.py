"""Mail that comes back: bounces, complaints, auto-replies and replies, read and acted on.

A relay answers 250 and the bad news comes later, by email. This package owns that mail,
from one message's bytes to what it does to one lead: `verp` (the return path that names
the delivery), `classify` (what kind of message it is: RFC 3464 DSNs, other MTAs' bounces
through flufl.bounce, RFC 5965 complaints, RFC 3834 auto-replies, a person's reply), `match`
(which delivery it is about: the VERP address, else the Message-ID we sent) and `process`
(the one processor every way in shares: record the message once, apply the outcome). The
SQL is in `campaign.store.inbound`; the commands in `campaign.cli.inbound`.
"""
