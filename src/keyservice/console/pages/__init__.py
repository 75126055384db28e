"""The console's pages, a module per place in the console."""

from __future__ import annotations

from fastapi import APIRouter

from keyservice.console.pages import applications, keys, people, session, usage, webhooks

routers: tuple[APIRouter, ...] = (
    session.router,
    applications.router,
    keys.router,
    usage.router,
    webhooks.router,
    people.router,
)
