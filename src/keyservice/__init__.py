"""keyservice: issue, verify, rate-limit and meter API keys."""

__version__ = "0.1.0"
