"""Getting due emails out: the dispatcher, the SMTP transport, connection pools, rate limits and
the unattended runner.
"""
