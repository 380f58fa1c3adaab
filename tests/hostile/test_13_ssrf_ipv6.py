"""Finding 13: IPv6 is allowed only as global unicast (2000::/3) outside the special ranges, so no IPv6
form of a private IPv4 address gets through (NAT64 included)."""
from __future__ import annotations

import ipaddress

import pytest

from impress.ssrf import is_public


@pytest.mark.parametrize("address", [
    "::7f00:1",                  # IPv4-compatible 127.0.0.1
    "::ffff:0:7f00:1",           # SIIT IPv4-translated 127.0.0.1
    "64:ff9b:1::7f00:1",         # local-use NAT64 (RFC 8215)
    "64:ff9b::7f00:1",           # well-known NAT64 prefix
    "64:ff9b::808:808",          # even with a public address inside: not 2000::/3
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "2001:db8::1",               # documentation
    "2001::1",                   # Teredo
    "2001:10::1",                # ORCHID
    "2002:7f00:1::1",            # 6to4 of 127.0.0.1
    "2002:a00:1::1",             # 6to4 of 10.0.0.1
    "3fff::1",                   # documentation (RFC 9637)
    "4000::1",                   # outside 2000::/3
])
def test_special_ipv6_addresses_are_refused(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["2606:4700::1111", "2a00:1450:4001::1", "2002:808:808::1", "::ffff:8.8.8.8",
                                     "93.184.216.34"])
def test_global_unicast_is_allowed(address):
    assert is_public(ipaddress.ip_address(address))
