"""The environment, read and checked in one place: each mistake names its variable, all of
them are reported at once, and no secret is ever repeated in a message. (The command line's
use of these checks is in tests/reliability/test_startup.py.)"""

from __future__ import annotations

import pytest

from campaign.config.settings import (
    SettingsError,
    SmtpSettings,
    WebLimits,
    base_url,
    check_environment,
    is_loopback,
)

KEY = "k" * 32  # a throwaway signing key for these checks


def test_all_problems_are_reported_together_each_with_its_name() -> None:
    env = {
        "CAMPAIGN_BASE_URL": "javascript:alert(1)",
        "CAMPAIGN_SMTP_PORT": "0",
        "CAMPAIGN_API_TOKEN": "sixteen-chars-ok",  # long enough: not reported
        "CAMPAIGN_SECRET_KEY": "secret value with spaces",
        "CAMPAIGN_WEB_TIMEOUT": "inf",
    }
    with pytest.raises(SettingsError) as raised:
        check_environment(env=env)
    named = [problem.split("=")[0].split(" ")[0] for problem in raised.value.problems]
    assert named == [
        "CAMPAIGN_BASE_URL",
        "CAMPAIGN_SMTP_PORT",
        "CAMPAIGN_SECRET_KEY",
        "CAMPAIGN_WEB_TIMEOUT",
    ]
    assert "secret value" not in str(raised.value)


def test_a_clean_environment_passes_and_trailing_slashes_are_dropped() -> None:
    check_environment(env={"CAMPAIGN_SECRET_KEY": KEY})
    assert base_url({"CAMPAIGN_BASE_URL": "https://go.clinic.example/"}) == (
        "https://go.clinic.example"
    )
    assert base_url({"CAMPAIGN_BASE_URL": "http://[::1]:8080"}) == "http://[::1]:8080"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("mail.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("127.1", False),  # an abbreviation some resolvers accept; not written as loopback
        ("localhost.example.com", False),
        ("10.0.0.5", False),
        ("smtp.example.com", False),
    ],
)
def test_loopback_is_what_the_host_is_written_as(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_password_never_appears_in_a_refusal() -> None:
    env = {
        "CAMPAIGN_SMTP_HOST": "smtp.example.com",
        "CAMPAIGN_SMTP_USER": "clinic",
        "CAMPAIGN_SMTP_PASSWORD": "pa ss\n",
    }
    with pytest.raises(SettingsError) as raised:
        SmtpSettings.from_env(env)
    assert "CAMPAIGN_SMTP_PASSWORD" in str(raised.value) and "pa ss" not in str(raised.value)


def test_a_password_without_a_user_is_a_mistake_not_silence() -> None:
    with pytest.raises(SettingsError, match="CAMPAIGN_SMTP_USER is not"):
        SmtpSettings.from_env({"CAMPAIGN_SMTP_PASSWORD": "secret"})


def test_tls_needs_no_opt_in_for_a_password() -> None:
    env = {
        "CAMPAIGN_SMTP_HOST": "smtp.example.com",
        "CAMPAIGN_SMTP_SECURITY": "starttls",
        "CAMPAIGN_SMTP_USER": "clinic",
        "CAMPAIGN_SMTP_PASSWORD": "secret",
    }
    assert SmtpSettings.from_env(env).port == 587


def test_web_limits_default_and_from_the_environment() -> None:
    assert WebLimits.from_env({}) == WebLimits(10.0, 5.0, 200, 16 * 1024)
    limits = WebLimits.from_env({"CAMPAIGN_WEB_TIMEOUT": "1", "CAMPAIGN_WEB_MAX_CONNECTIONS": "3"})
    assert (limits.timeout, limits.keep_alive, limits.max_connections) == (1.0, 1.0, 3)
    with pytest.raises(SettingsError, match="CAMPAIGN_WEB_MAX_CONNECTIONS"):
        WebLimits.from_env({"CAMPAIGN_WEB_MAX_CONNECTIONS": "-5"})
