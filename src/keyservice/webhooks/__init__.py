"""Webhooks: endpoints, the fan-out of events to them, and their delivery.

Importing the package subscribes its fan-outs to the events outbox (``fanout`` for webhooks,
``email`` for alert emails): the outbox imports nothing of webhooks.
"""

from keyservice.webhooks import email as email
from keyservice.webhooks import fanout as fanout
