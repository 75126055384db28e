"""Webhooks: endpoints, the fan-out of events to them, and their delivery.

Importing the package subscribes its fan-out to the events outbox (``fanout``): the outbox
imports nothing of webhooks.
"""

from keyservice.webhooks import fanout as fanout
