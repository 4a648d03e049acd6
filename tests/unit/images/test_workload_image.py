"""The workload image's spec (iflearner/images/workload.py), without pip,
debootstrap or containerd: a fake installed-packages directory stands in."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from iflearner.images import oci, workload
from iflearner.images.pip import pip_install_argv
from iflearner.images.spec import File, Symlink, tag
from iflearner.job import load_job_file

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    root = tmp_path / "site-packages"
    (root / "iflearner" / "business").mkdir(parents=True)
    (root / "iflearner" / "__init__.py").write_text("")
    (root / "iflearner" / "business" / "__pycache__").mkdir()
    (root / "iflearner" / "business" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "numpy").mkdir()
    lib = root / "numpy" / "_core.cpython-311-x86_64-linux-gnu.so"
    lib.write_bytes(b"\x7fELF")
    lib.chmod(0o755)
    (root / ".complete").write_text("marker")
    return root


def test_pip_installs_the_locked_closure_for_bookworms_python() -> None:
    argv = pip_install_argv(Path("/t"), workload.REQUIREMENTS)
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--no-compile"):
        assert flag in argv
    assert argv[argv.index("--python-version") + 1] == "3.11"
    assert argv[argv.index("--abi") + 1] == "cp311"
    assert argv[argv.index("--target") + 1] == "/t"
    assert argv[argv.index("-r") + 1] == str(REPO / "workloads" / "iflearner" / "requirements.lock")
    platforms = {argv[i + 1] for i, a in enumerate(argv) if a == "--platform"}
    # bookworm's glibc 2.36 down to the manylinux2014 most wheels (grpcio, numpy) carry.
    assert {"manylinux_2_36_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"} <= platforms
    assert "manylinux_2_37_x86_64" not in platforms


def test_layout(packages: Path) -> None:
    spec = workload.workload_image(packages)
    assert spec.name == "iflearner-workload"
    assert spec.base is not None and "python3" in spec.base.include and spec.base.suite == "bookworm"
    deps, app = spec.layers
    dep_paths = {e.path: e for e in deps.entries}
    assert set(dep_paths) == {
        "/opt/iflearner/site-packages/iflearner/__init__.py",
        "/opt/iflearner/site-packages/numpy/_core.cpython-311-x86_64-linux-gnu.so",
    }  # no .pyc, no build marker
    lib = dep_paths["/opt/iflearner/site-packages/numpy/_core.cpython-311-x86_64-linux-gnu.so"]
    assert isinstance(lib, File) and lib.mode == 0o755
    app_paths = {e.path: e for e in app.entries}
    for name in ("trainer.py", "server.py", "plot.py", "requirements.txt"):
        entry = app_paths[f"/workload/{name}"]
        assert isinstance(entry, File) and entry.source == REPO / "workloads" / "iflearner" / name
    assert app_paths["/usr/local/bin/python"] == Symlink("/usr/local/bin/python", "/usr/bin/python3")
    config = spec.config.to_oci()
    assert "Entrypoint" not in config  # a job's args are the whole command, as in the original image
    assert config["WorkingDir"] == "/workload"
    assert "PYTHONPATH=/opt/iflearner/site-packages" in config["Env"]
    assert "MPLBACKEND=Agg" in config["Env"]
    assert set(config["ExposedPorts"]) == {"50001/tcp", "50002/tcp"}
    assert "User" not in config  # iflearner writes log/ and metric/ into its working directory


def test_tag_follows_the_installed_packages(packages: Path) -> None:
    before = tag(workload.workload_image(packages))
    assert tag(workload.workload_image(packages)) == before
    (packages / "iflearner" / "__init__.py").write_text("# changed\n")
    assert tag(workload.workload_image(packages)) != before


def test_layer_tarball(packages: Path) -> None:
    tar = tarfile.open(fileobj=io.BytesIO(oci.layer_tar(workload.workload_image(packages).layers[1])))
    members = {m.name: m for m in tar.getmembers()}
    assert members["workload/trainer.py"].isfile()
    assert members["usr/local/bin/python"].issym()


def test_federation_examples_run_what_the_image_holds(packages: Path) -> None:
    spec = workload.workload_image(packages)
    files = {e.path for layer in spec.layers for e in layer.entries}
    for name in ("server.yaml", "party-a.yaml", "party-b.yaml"):
        container = load_job_file(REPO / "examples" / "federation" / name).template["spec"]["containers"][0]
        workdir = container.get("workingDir", spec.config.workdir)
        assert container["args"][0] == "python"
        assert f"{workdir}/{container['args'][2]}" in files
        assert container["image"].startswith(f"{spec.repository}:")


def test_the_lock_files_pin_every_requirement_with_hashes() -> None:
    """`make lock` was run after the last change of a requirements file: every pin there is in its
    lock, and every locked package has a hash (pip --require-hashes refuses anything else)."""
    import re

    for requirements, lock in ((REPO / "requirements-runtime.txt", REPO / "requirements-runtime.lock"),
                               (REPO / "workloads" / "iflearner" / "requirements.txt",
                                REPO / "workloads" / "iflearner" / "requirements.lock")):
        pins = {line.split("#")[0].strip().lower().replace("_", "-")
                for line in requirements.read_text().splitlines() if "==" in line.split("#")[0]}
        text = lock.read_text()
        locked = re.findall(r"^([a-z0-9.\-]+==\S+)((?: \\\n    --hash=sha256:[0-9a-f]{64})+)$", text, re.M)
        assert len(locked) == text.count("=="), f"{lock.name}: a pin without a hash"
        assert pins <= {pin for pin, _ in locked}, f"{lock.name} is stale: run `make lock`"
