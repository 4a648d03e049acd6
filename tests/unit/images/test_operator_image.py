from __future__ import annotations

import os

from iflearner.images.operator_image import SITE_PACKAGES, TOOL_BINARIES, TOOLS_DIR, operator_image, tree
from iflearner.images.spec import File, Symlink, reference


def _fake_inputs(tmp_path):
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    for name in (*TOOL_BINARIES, "etcd", "kube-apiserver"):
        (tools / "bin" / name).write_text(f"#!/bin/sh\necho {name}\n")
        os.chmod(tools / "bin" / name, 0o755)
    plugin = tools / "pulumi-home" / "plugins" / "resource-kubernetes-v4.34.2"
    plugin.mkdir(parents=True)
    (plugin / "pulumi-resource-kubernetes").write_text("provider")
    os.chmod(plugin / "pulumi-resource-kubernetes", 0o755)
    site = tmp_path / "site"
    (site / "yaml" / "__pycache__").mkdir(parents=True)
    (site / "yaml" / "__init__.py").write_text("")
    (site / "yaml" / "__pycache__" / "x.pyc").write_bytes(b"")
    os.symlink("yaml", site / "alias")
    return tools, site


def test_the_operator_image_runs_as_non_root_with_only_what_the_operator_needs(tmp_path):
    tools, site = _fake_inputs(tmp_path)
    spec = operator_image(tools, site)
    assert spec.config.user == "65532:65532"
    assert spec.config.entrypoint == ("python3", "-m", "iflearner") and spec.config.cmd == ("run",)
    env = dict(e.split("=", 1) for e in spec.config.env)
    assert env["IFLEARNER_TOOLS_DIR"] == TOOLS_DIR and env["HOME"] == "/tmp"
    paths = {e.path: e for layer in spec.layers for e in layer.entries}
    assert f"{TOOLS_DIR}/bin/pulumi" in paths and paths[f"{TOOLS_DIR}/bin/pulumi"].mode == 0o755
    assert f"{TOOLS_DIR}/bin/etcd" not in paths and f"{TOOLS_DIR}/bin/kube-apiserver" not in paths
    provider = f"{TOOLS_DIR}/pulumi-home/plugins/resource-kubernetes-v4.34.2/pulumi-resource-kubernetes"
    assert paths[provider].mode == 0o755
    assert "/app/iflearner/controller/reconciler.py" in paths and "/app/crd/iflearnerjob.yaml" in paths
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in paths)
    assert all(getattr(e, "uid", 0) == 0 for e in paths.values()), "files are root-owned: read-only to the user"
    assert isinstance(paths[f"{SITE_PACKAGES}/alias"], Symlink)


def test_the_tag_follows_the_inputs(tmp_path):
    tools, site = _fake_inputs(tmp_path)
    first = reference(operator_image(tools, site))
    assert reference(operator_image(tools, site)) == first
    (site / "yaml" / "__init__.py").write_text("changed = True\n")
    assert reference(operator_image(tools, site)) != first


def test_tree_keeps_execute_bits(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("y")
    os.chmod(tmp_path / "b", 0o755)
    entries = {e.path: e for e in tree(tmp_path, "/d")}
    assert isinstance(entries["/d/a"], File) and entries["/d/a"].mode == 0o644 and entries["/d/b"].mode == 0o755
