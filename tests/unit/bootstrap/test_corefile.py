from __future__ import annotations

import pytest

from iflearner.bootstrap.corefile import (
    BEGIN_MARK,
    END_MARK,
    CorefileError,
    ZoneTemplate,
    add_block,
    remove_block,
    render_block,
)
from iflearner.localcluster.kubeadm_addons import STOCK_COREFILE

ZONES = [ZoneTemplate("a.party.iflearner.com", "10.0.0.5"), ZoneTemplate("server.iflearner.com", "10.0.0.6")]


def test_block_goes_inside_root_server_block_and_comes_out_byte_exact():
    edited = add_block(STOCK_COREFILE, render_block(ZONES))
    assert edited.index(BEGIN_MARK) < edited.rindex("}")
    assert edited.rstrip().endswith("}")
    assert edited.count("{") == edited.count("}")
    assert remove_block(edited) == STOCK_COREFILE


def test_adding_twice_replaces_instead_of_duplicating():
    once = add_block(STOCK_COREFILE, render_block(ZONES))
    twice = add_block(once, render_block(ZONES[:1]))
    assert twice.count(BEGIN_MARK) == 1 and twice.count(END_MARK) == 1
    assert "server.iflearner.com" not in twice


def test_zone_templates_match_only_their_zone():
    block = render_block(ZONES)
    assert r"match .*\.a\.party\.iflearner\.com\.?$" in block
    assert 'answer "{{ .Name }} 60 IN A 10.0.0.5"' in block
    assert r"directory /etc/coredns/iflearner db\.(.*) {1}" in block


def test_other_server_blocks_are_left_alone():
    corefile = "example.org:53 {\n    whoami\n}\n" + STOCK_COREFILE
    edited = add_block(corefile, render_block([]))
    assert edited.startswith("example.org:53 {\n    whoami\n}\n")
    assert remove_block(edited) == corefile


def test_corefile_without_root_block_is_refused_with_reason():
    with pytest.raises(CorefileError, match=r"no '\.:53 \{' server block"):
        add_block("example.org:53 {\n}\n", render_block([]))


def test_each_records_shard_is_its_own_volume_in_a_subdirectory():
    from iflearner.bootstrap.coredns import _is_records_volume, records_volumes

    assert records_volumes(["r", "r-1", "r-2"], "iflearner-dns-records", "/etc/coredns/iflearner") == [
        ("iflearner-dns-records", "r", "/etc/coredns/iflearner/0"),
        ("iflearner-dns-records-1", "r-1", "/etc/coredns/iflearner/1"),
        ("iflearner-dns-records-2", "r-2", "/etc/coredns/iflearner/2"),
    ]
    assert _is_records_volume("iflearner-dns-records-7", "iflearner-dns-records")
    assert not _is_records_volume("iflearner-dns-records-extra", "iflearner-dns-records")
    assert not _is_records_volume("config-volume", "iflearner-dns-records")


def test_job_records_answer_only_under_the_job_domains():
    scoped = render_block(ZONES, ("server.iflearner.com", "a.party.iflearner.com"))
    assert "auto server.iflearner.com a.party.iflearner.com {" in scoped
    # A cluster bootstrapped without job domains keeps the block it had.
    assert "    auto {\n" in render_block(ZONES)
