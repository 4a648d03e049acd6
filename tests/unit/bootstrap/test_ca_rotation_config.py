"""The bootstrap's side of a CA rotation: both own CAs in the bundles, and generations that make sense."""

from __future__ import annotations

import pytest

from iflearner.bootstrap.program import ca_generations, trust_bundles

NEW, OLD, PEER = "NEW-CA\n", "OLD-CA", "PEER-CA\n"


@pytest.mark.parametrize(("role", "server", "party"), [
    ("all", NEW + OLD + "\n", NEW + OLD + "\n"),
    ("server", NEW + OLD + "\n", PEER),
    ("party", PEER, NEW + OLD + "\n"),
])
def test_during_a_rotation_both_own_cas_are_trusted_where_the_cluster_issues(role, server, party):
    peers = {"server": [PEER]} if role == "party" else {"party": [PEER]} if role == "server" else {}
    assert trust_bundles(role, [NEW, OLD], peers) == {"server.crt": server, "party.crt": party}


def test_generations_default_to_zero_without_a_rotation():
    assert ca_generations(None, None) == (0, None)
    assert ca_generations(1, 0) == (1, 0)


@pytest.mark.parametrize(("issuing", "retiring"), [(1, 1), (1, 2), (None, 0), (-1, None), (2, -1)])
def test_a_retiring_generation_must_be_older_and_the_error_says_how_to_rotate(issuing, retiring):
    with pytest.raises(ValueError, match="to rotate, set caRetiringGeneration to the current caGeneration"):
        ca_generations(issuing, retiring)
