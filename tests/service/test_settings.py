from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from keyservice import secretbox
from keyservice.config import SQLITE_DEFAULT_URL, Settings


def test_development_defaults_to_embedded_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYSERVICE_DATABASE_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.effective_database_url == SQLITE_DEFAULT_URL
    assert "contacts:read" in settings.scopes


def test_production_refuses_to_start_without_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSERVICE_MODE", "production")
    monkeypatch.setenv("KEYSERVICE_ENCRYPTION_KEY", secretbox.new_key())
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


def test_production_refuses_to_start_without_an_encryption_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYSERVICE_MODE", "production")
    monkeypatch.setenv("KEYSERVICE_DATABASE_URL", "postgresql+asyncpg://db/keys")
    monkeypatch.delenv("KEYSERVICE_ENCRYPTION_KEY", raising=False)
    with pytest.raises(ValidationError, match="KEYSERVICE_ENCRYPTION_KEY must be set"):
        Settings(_env_file=None)
    monkeypatch.setenv("KEYSERVICE_ENCRYPTION_KEY", "not a key")
    with pytest.raises(ValidationError, match="must be a Fernet key"):
        Settings(_env_file=None)
    monkeypatch.setenv("KEYSERVICE_ENCRYPTION_KEY", secretbox.new_key())
    assert Settings(_env_file=None).encryption_key is not None


def test_development_generates_its_encryption_key_beside_the_database_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keyservice.db'}"
    path = secretbox.development_key_path(url)
    assert path == tmp_path / secretbox.DEVELOPMENT_KEY_FILE
    with caplog.at_level(logging.WARNING):
        box = secretbox.Keyring(None, development_path=path).box()
    assert str(path) in caplog.text
    assert path.stat().st_mode & 0o777 == 0o600
    token = box.encrypt("whsec_x")
    # Another instance (or a restart) reads the same key, and so the same secrets.
    assert secretbox.Keyring(None, development_path=path).box().decrypt(token) == "whsec_x"
    assert path.read_text().strip() not in caplog.text
