"""Settings are read without side effects, and credentials are never made up by a process."""

from __future__ import annotations

import os
import stat

import pytest

from infra.launcher import CREDENTIALS, credentials_file, stack_credentials
from paxkit.config import DEFAULT_RETENTION_S, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def no_credentials(monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)


def test_loading_settings_leaves_the_environment_as_it_was(no_credentials):
    before = dict(os.environ)
    settings = load_settings()
    assert dict(os.environ) == before
    assert (settings.admin_token, settings.service_token) == (None, None)


def test_an_empty_credential_counts_as_none(monkeypatch):
    monkeypatch.setenv("PAXMART_ADMIN_TOKEN", "")
    monkeypatch.setenv("PAXMART_SERVICE_TOKEN", "s3cret")
    settings = load_settings()
    assert (settings.admin_token, settings.service_token) == (None, "s3cret")


def test_retention_defaults_to_a_week_and_refuses_an_unsafe_horizon(monkeypatch):
    monkeypatch.delenv("PAXMART_RETENTION_S", raising=False)
    assert load_settings().retention_s == DEFAULT_RETENTION_S == 7 * 24 * 3600
    monkeypatch.setenv("PAXMART_RETENTION_S", "60")
    with pytest.raises(ValueError, match="PAXMART_RETENTION_S"):
        load_settings()


def test_the_launcher_makes_one_set_of_credentials_and_keeps_it(tmp_path, no_credentials):
    first = stack_credentials(tmp_path, {})
    assert set(first) == set(CREDENTIALS) and len(set(first.values())) == len(CREDENTIALS)
    assert all(len(value) >= 32 for value in first.values())
    path = credentials_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack_credentials(tmp_path, {}) == first, "a restart keeps them"
    for name, value in first.items():
        assert f"export {name}={value}\n" in path.read_text(), "the file can be sourced"


def test_credentials_from_the_environment_win_and_are_not_stored(tmp_path):
    stored = stack_credentials(tmp_path, {})
    given = {"PAXMART_ADMIN_TOKEN": "from-env"}
    chosen = stack_credentials(tmp_path, given)
    assert chosen == {**stored, "PAXMART_ADMIN_TOKEN": "from-env"}
    assert "from-env" not in credentials_file(tmp_path).read_text()
    assert stack_credentials(tmp_path, {}) == stored
