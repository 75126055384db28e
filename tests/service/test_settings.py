from __future__ import annotations

import pytest
from pydantic import ValidationError

from keyservice.config import SQLITE_DEFAULT_URL, Settings


def test_development_defaults_to_embedded_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYSERVICE_DATABASE_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.effective_database_url == SQLITE_DEFAULT_URL
    assert "contacts:read" in settings.scopes


def test_production_refuses_to_start_without_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSERVICE_MODE", "production")
    monkeypatch.delenv("KEYSERVICE_DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="KEYSERVICE_DATABASE_URL"):
        Settings(_env_file=None)
    monkeypatch.setenv("KEYSERVICE_DATABASE_URL", "postgresql+asyncpg://db/keys")
    assert Settings(_env_file=None).database_url == "postgresql+asyncpg://db/keys"


def test_scope_catalogue_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSERVICE_SCOPES", "leads:read, leads:write,forms:read")
    assert Settings(_env_file=None).scopes == ("leads:read", "leads:write", "forms:read")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEYSERVICE_SCOPES", "leads"),
        ("KEYSERVICE_SCOPES", "leads:*"),
        ("KEYSERVICE_SCOPES", "keyservice:keys:write"),
        ("KEYSERVICE_KEY_PREFIX", "KS"),
        ("KEYSERVICE_KEY_PREFIX", "k_s"),
    ],
)
def test_invalid_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)
