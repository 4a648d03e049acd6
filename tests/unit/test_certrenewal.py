"""Renewal decisions on real certificates issued by the project's own issuer."""

from __future__ import annotations

import datetime
import time

import pytest

from iflearner.certrenewal import (
    CertificateTimes,
    backdate,
    certificate_times,
    renewal_due,
    renewal_time,
    seconds_until_renewal,
)
from iflearner.tlsresources import _LeafProvider, issue_ca, issue_leaf

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _times(lifetime: datetime.timedelta) -> CertificateTimes:
    return CertificateTimes("ab", T0, T0 + lifetime)


def test_default_renewal_is_at_two_thirds_of_the_lifetime():
    times = _times(datetime.timedelta(days=365))
    assert renewal_time(times) == T0 + datetime.timedelta(days=365) * 2 / 3
    assert not renewal_due(times, renewal_time(times) - datetime.timedelta(seconds=1))
    assert renewal_due(times, renewal_time(times))
    assert renewal_due(times, T0 + datetime.timedelta(days=400))  # expired: still renewed


def test_configurable_fraction_and_seconds_until():
    times = _times(datetime.timedelta(seconds=60))
    assert renewal_time(times, 0.5) == T0 + datetime.timedelta(seconds=30)
    assert seconds_until_renewal(times, T0 + datetime.timedelta(seconds=10), 0.5) == 20
    assert seconds_until_renewal(times, T0 + datetime.timedelta(seconds=50), 0.5) == 0


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        renewal_time(_times(datetime.timedelta(hours=1)), fraction)


def test_a_certificate_without_lifetime_is_never_due():
    # Issued under an expired CA (notAfter capped below notBefore): renewing it would loop.
    times = CertificateTimes("ab", T0, T0 - datetime.timedelta(seconds=1))
    assert not renewal_due(times, T0 + datetime.timedelta(days=1))


def test_short_validity_is_back_dated_a_tenth_long_ones_five_minutes():
    assert backdate(datetime.timedelta(seconds=60)) == datetime.timedelta(seconds=6)
    assert backdate(datetime.timedelta(days=365)) == datetime.timedelta(minutes=5)


def test_times_read_from_an_issued_certificate():
    ca = issue_ca("renewal CA", 24)
    leaf = issue_leaf(ca["cert_pem"], ca["private_key_pem"], "h.example.com", ["h.example.com"], 1,
                      validity_seconds=60)
    times = certificate_times(leaf["cert_pem"])
    assert times is not None
    assert times.lifetime == datetime.timedelta(seconds=66)
    assert certificate_times("not a certificate") is None


def test_provider_diff_replaces_a_due_certificate_only():
    """The certificate resource renews by itself once due, with no input changed."""
    ca = issue_ca("renewal CA", 24)
    provider = _LeafProvider()
    props = {"ca_cert_pem": ca["cert_pem"], "ca_key_pem": ca["private_key_pem"], "common_name": "h.example.com",
             "dns_names": ["h.example.com"], "validity_hours": 1, "renewal_fraction": 2 / 3}
    fresh = provider.create({**props, "validity_seconds": 3600}).outs
    news = {**props, "validity_seconds": 3600}
    assert not provider.diff("h", fresh, news).changes
    # A certificate already past 2/3 of its life: one issued long ago, for a short time.
    old = issue_leaf(ca["cert_pem"], ca["private_key_pem"], "h.example.com", ["h.example.com"], 1,
                     validity_seconds=1)
    due = {**fresh, "cert_pem": old["cert_pem"]}
    time.sleep(1.1)
    diff = provider.diff("h", due, news)
    assert diff.changes and diff.replaces == ["cert_pem"]
    # A later renewal point (fraction) is not an input change by itself.
    assert not provider.diff("h", fresh, {**news, "renewal_fraction": 0.9}).changes


def test_renewal_settings_from_flags_and_the_settings_file():
    import argparse

    from iflearner.controller.options import add_run_arguments, options_from_args
    from iflearner.desired import ClusterSettings
    from iflearner.settings import parse_cluster_settings

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    settings = options_from_args(parser.parse_args(
        ["--certificate-validity-seconds", "60", "--certificate-renewal-fraction", "0.5"])).settings
    assert (settings.certificate_validity_seconds, settings.certificate_renewal_fraction) == (60, 0.5)
    assert ClusterSettings().certificate_renewal_fraction == pytest.approx(2 / 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--certificate-renewal-fraction", "1"])
    parsed = parse_cluster_settings("certificateValiditySeconds: 90\ncertificateRenewalFraction: 0.75\n", "test")
    assert (parsed.certificate_validity_seconds, parsed.certificate_renewal_fraction) == (90, 0.75)
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_cluster_settings("certificateRenewalFraction: 1.5\n", "test")
