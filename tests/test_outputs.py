"""Destinations a user names (`predict --output`, `init --out`, `bench --out`, `sweep --out`, `ship --out`):
a FIFO or character device is written through and stays what it is, block devices, sockets and other
special files are refused (exit 2), and the input file is never the output.

Every device node and FIFO here is private, made under tmp_path (the suite runs as root: nothing here
touches /dev)."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline import errors
from pipeline.store import artifacts as A

runner = CliRunner()
NULL_DEVICE = os.makedev(1, 3)  # the kernel's null device: a private node for it under tmp_path
LOOP_DEVICE = os.makedev(7, 0)  # a block device number; the node is only made and refused, never opened


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def char_device(path: Path) -> Path:
    os.mknod(path, stat.S_IFCHR | 0o666, NULL_DEVICE)
    return path


def block_device(path: Path) -> Path:
    os.mknod(path, stat.S_IFBLK | 0o600, LOOP_DEVICE)
    return path


def unix_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


class FifoReader(threading.Thread):
    """Reads a FIFO to its end in the background (what `cat fifo` does)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        os.mkfifo(path)
        self.path, self.data = path, b""

    def run(self) -> None:
        with open(self.path, "rb") as f:
            self.data = f.read()


@pytest.fixture(scope="module")
def published(shipped):
    return shipped  # the shallow and wide-deep models, published (read-only here)


# ---------------------------------------------------------------------------------------------
# The library's rule


def test_check_output_tells_files_from_streams_and_refuses_the_rest(tmp_path):
    assert A.check_output(tmp_path / "new.csv", "--output") == A.OUTPUT_FILE
    (tmp_path / "old.csv").write_text("x")
    assert A.check_output(tmp_path / "old.csv", "--output") == A.OUTPUT_FILE
    os.mkfifo(tmp_path / "fifo")
    assert A.check_output(tmp_path / "fifo", "--output") == A.OUTPUT_STREAM
    assert A.check_output(char_device(tmp_path / "null"), "--output") == A.OUTPUT_STREAM
    (tmp_path / "link").symlink_to(tmp_path / "null")  # a link to a device: the device
    assert A.check_output(tmp_path / "link", "--output") == A.OUTPUT_STREAM
    sock = unix_socket(tmp_path / "sock")
    try:
        for path, what in (
            (block_device(tmp_path / "blk"), "a block device"),
            (tmp_path / "sock", "a socket"),
            (tmp_path, "a folder"),
        ):
            with pytest.raises(errors.UsageError, match=what) as info:
                A.check_output(path, "--output")
            assert info.value.exit_code == 2 and "\n" not in str(info.value)
    finally:
        sock.close()
    with pytest.raises(errors.UsageError, match="does not exist"):
        A.check_output(tmp_path / "nowhere" / "x.csv", "--output")


def test_the_input_file_is_never_the_output_whatever_the_name(tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text("x1,x2\n0,1\n")
    (tmp_path / "alias.csv").symlink_to(data)
    os.link(data, tmp_path / "hard.csv")
    for out in (data, tmp_path / "alias.csv", tmp_path / "hard.csv", tmp_path / "." / "rows.csv"):
        with pytest.raises(errors.UsageError, match="is the input file itself"):
            A.check_output(out, "--output", inputs=[data])
    assert data.read_text() == "x1,x2\n0,1\n"


def test_a_stream_is_written_through_and_a_file_is_replaced_whole(tmp_path):
    node = char_device(tmp_path / "null")
    A.write_output_bytes(node, b"gone", "--out")
    assert stat.S_ISCHR(os.lstat(node).st_mode)  # still the device node, not a regular file
    reader = FifoReader(tmp_path / "fifo")
    reader.start()
    A.write_output_bytes(tmp_path / "fifo", b"through the pipe", "--out")
    reader.join(10)
    assert reader.data == b"through the pipe" and stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    A.write_output_bytes(tmp_path / "f.json", b"new", "--out")
    assert (tmp_path / "f.json").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "fifo", "null"]  # no temporaries


# ---------------------------------------------------------------------------------------------
# Every option that names a file or folder we write


def test_predict_output_writes_through_a_fifo_and_a_device_and_refuses_the_rest(published, tmp_path):
    args = ["predict", "--arch", "shallow", "--artifacts-dir", published]
    reader = FifoReader(tmp_path / "fifo")
    reader.start()
    r = invoke(*args, "--output", tmp_path / "fifo", "0,1", "1,1")
    reader.join(10)
    assert r.exit_code == 0, r.output
    assert len(reader.data.decode().splitlines()) == 3  # header + 2 rows, through the pipe
    node = char_device(tmp_path / "null")
    r = invoke(*args, "--output", node, "0,1")
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    sock = unix_socket(tmp_path / "sock")
    try:
        for out, what in ((block_device(tmp_path / "blk"), "a block device"), (tmp_path / "sock", "a socket")):
            r = invoke(*args, "--output", out, "0,1")
            assert r.exit_code == 2 and what in r.output and len(r.output.strip().splitlines()) == 1, r.output
    finally:
        sock.close()
    assert stat.S_ISBLK(os.lstat(tmp_path / "blk").st_mode)


def test_predict_never_overwrites_its_input(published, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("x1,x2\n0,1\n1,1\n")
    r = invoke("predict", "--arch", "shallow", "--artifacts-dir", published, "--input", rows, "--output", rows)
    assert r.exit_code == 2 and "is the input file itself" in r.output
    assert rows.read_text() == "x1,x2\n0,1\n1,1\n"


def test_init_out_writes_through_a_device_without_force_and_never_over_its_data(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    node = char_device(tmp_path / "null")
    r = invoke("init", "--data", data, "--target", "y", "--out", node)
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    r = invoke("init", "--data", data, "--target", "y", "--out", data, "--force")
    assert r.exit_code == 2 and "data file itself" in r.output
    r = invoke("init", "--data", data, "--target", "y", "--out", block_device(tmp_path / "blk"))
    assert r.exit_code == 2 and "a block device" in r.output


def test_bench_out_refuses_a_device_and_its_recipe_before_any_work(tmp_path):
    r = invoke("bench", "--quick", "--out", block_device(tmp_path / "blk"))
    assert r.exit_code == 2 and "a block device" in r.output
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n[data]\nbuiltin = "xor"\n[gate]\nmin_accuracy = 1.0\n')
    r = invoke("bench", "--recipe", recipe, "--out", recipe)
    assert r.exit_code == 2 and "is the input file itself" in r.output
    assert recipe.read_text().startswith('name = "r"')


@pytest.mark.parametrize("make", ["fifo", "char", "file"])
def test_sweep_and_ship_out_must_be_folders(published, tmp_path, make):
    target = tmp_path / "out"
    if make == "fifo":
        os.mkfifo(target)
    elif make == "char":
        char_device(target)
    else:
        target.write_text("a file")
    r = invoke("sweep", "--arch", "shallow", "--seeds", "2", "--steps", "10", "--out", target)
    assert r.exit_code == 2 and "not a folder" in r.output, r.output
    r = invoke("ship", "--arch", "shallow", "--artifacts-dir", published, "--out", target)
    assert r.exit_code == 2 and "not a folder" in r.output, r.output
    assert not stat.S_ISREG(os.lstat(target).st_mode) or target.read_text() == "a file"


# ---------------------------------------------------------------------------------------------
# Found by a red team: links, files the manifests describe, a full device, `-`


def test_a_link_is_written_through_never_replaced(published, tmp_path):
    """/dev/stdout is a link to /proc/self/fd/1, which may name a regular file (`> log.txt`): the
    result goes where the link leads, and the link stays a link."""
    target = tmp_path / "log.txt"
    target.write_text("old")
    link = tmp_path / "mystdout"
    link.symlink_to(target)
    r = invoke("predict", "--arch", "shallow", "--artifacts-dir", published, "--output", link, "1,0")
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and "probability" in target.read_text()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    r = invoke("predict", "--arch", "shallow", "--artifacts-dir", published, "--output", tmp_path / "dangling", "1,0")
    assert r.exit_code == 2 and "a symbolic link to nothing" in r.output


def test_predict_to_proc_self_fd_1_with_stdout_redirected_to_a_file(published, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        r = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "predict", "--arch", "shallow", "--artifacts-dir", str(published),
             "--output", "/proc/self/fd/1", "1,0"],
            stdout=f, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "probability" in out.read_text() and os.path.islink("/proc/self/fd/1")


def test_no_output_lands_among_the_files_a_manifest_describes(published, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(published, root)
    v1 = root / "shallow" / "v1"
    before = {p.name: p.read_bytes() for p in v1.iterdir()}
    base = ("predict", "--artifacts-dir", root, "1,0")
    for args in (
        (*base, "--arch", "shallow", "--output", v1 / "model.onnx"),
        (*base, "--model", v1 / "model.onnx", "--output", v1 / "model.onnx"),
        (*base, "--arch", "shallow", "--output", v1 / "manifest.sha256"),
        (*base, "--arch", "shallow", "--output", root / "shallow" / "new.txt"),
    ):
        r = invoke(*args)
        assert r.exit_code == 2 and "inside the model artifacts" in r.output, (args, r.output)
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    r = invoke("init", "--data", data, "--target", "y", "--out", v1 / "model.onnx", "--force")
    assert r.exit_code == 2 and "inside the model artifacts" in r.output
    r = invoke("ship", "--arch", "shallow", "--artifacts-dir", root, "--out", v1)
    assert r.exit_code == 2 and "inside the model artifacts" in r.output
    assert {p.name: p.read_bytes() for p in v1.iterdir()} == before


def test_a_full_device_is_a_write_error_not_an_internal_one(published, tmp_path):
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # the kernel's always-full device, privately
    r = invoke("predict", "--arch", "shallow", "--artifacts-dir", published, "--output", full, "1,0")
    assert r.exit_code == errors.ArtifactWriteError.exit_code and "disk full" in r.output, r.output
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_dash_means_stdout(published, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("predict", "--arch", "shallow", "--artifacts-dir", published, "--output", "-", "1,0")
    assert r.exit_code == 0 and "probability" in r.stdout and not (tmp_path / "-").exists()
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    r = invoke("init", "--data", data, "--target", "y", "--out", "-")
    assert r.exit_code == 0 and 'name = "d"' in r.stdout and not (tmp_path / "-").exists()
