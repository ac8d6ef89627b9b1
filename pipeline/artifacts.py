"""Artifact folders: file names, atomic writes, the manifest, integrity checks and the run lock.

Only this module knows file names. Layout, per architecture:

    <root>/<arch>/weights.safetensors   trained weights (safetensors: no unpickling on load)
    <root>/<arch>/loss_history.json     loss at every step
    <root>/<arch>/loss.png              loss curve (only when matplotlib is installed)
    <root>/<arch>/model.onnx            the shipped model, self-contained
    <root>/<arch>/verify.json           the cross-runtime equivalence report
    <root>/<arch>/MODEL_CARD.md         written by `ship`
    <root>/<arch>/manifest.json         written last; names every file above with its sha256
    <root>/.lock                        held by a run that writes

Crash safety: every file is written to a temporary file in the same folder, fsynced and moved into
place with os.replace. A stage first rewrites the manifest without the entries it is about to
replace (and those that depend on them), then moves its files in, then writes the new manifest. So
after a kill at any moment each file is the complete old or the complete new one, and the manifest
never describes a file that is not there or not what it says.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    ArtifactWriteError,
    CorruptArtifact,
    FolderLocked,
    IntegrityError,
    MissingArtifact,
)
from .manifest import FileRecord, Manifest

WEIGHTS = "weights.safetensors"
HISTORY = "loss_history.json"
LOSS_PNG = "loss.png"
ONNX = "model.onnx"
VERIFY = "verify.json"
CARD = "MODEL_CARD.md"
MANIFEST = "manifest.json"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"

# What each stage's output invalidates downstream: (files, manifest sections).
DOWNSTREAM: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": ((ONNX, VERIFY, CARD), ("export", "serve_check", "verify")),
    "export": ((VERIFY, CARD), ("serve_check", "verify")),
    "verify": ((CARD,), ()),
}


@dataclass(frozen=True)
class ArtifactPaths:
    root: Path
    arch: str

    @property
    def folder(self) -> Path:
        return self.root / self.arch

    def file(self, name: str) -> Path:
        return self.folder / name

    @property
    def weights(self) -> Path:
        return self.file(WEIGHTS)

    @property
    def history(self) -> Path:
        return self.file(HISTORY)

    @property
    def loss_png(self) -> Path:
        return self.file(LOSS_PNG)

    @property
    def onnx(self) -> Path:
        return self.file(ONNX)

    @property
    def verify(self) -> Path:
        return self.file(VERIFY)

    @property
    def card(self) -> Path:
        return self.file(CARD)

    @property
    def manifest(self) -> Path:
        return self.file(MANIFEST)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fault_point(name: str) -> None:
    """Test hook: `XORSHIP_KILL_AT=<name>` SIGKILLs this process here (crash-consistency tests)."""
    if os.environ.get("XORSHIP_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def write_error(path: Path, exc: OSError) -> ArtifactWriteError:
    what = {
        errno.ENOSPC: "disk full",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a parent is not a folder",
        errno.EPERM: "operation not permitted",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return ArtifactWriteError(f"cannot write {path}: {what}; earlier artifacts are untouched")


def ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from None
    if not folder.is_dir():
        raise ArtifactWriteError(f"cannot write {folder}: it is not a folder")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage_file(folder: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Have `write` fill a temporary file next to `name`, fsync it, and return its path.

    The caller moves it into place through `commit`. On any failure the temporary file is removed.
    """
    ensure_folder(folder)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}.", dir=folder)
    except OSError as exc:
        raise write_error(folder / name, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(folder / name, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def stage_bytes(folder: Path, name: str, data: bytes) -> Path:
    def write(p: Path) -> None:
        p.write_bytes(data)

    return stage_file(folder, name, write)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is always either the old or the new content."""
    tmp = stage_bytes(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None


def clean_stale_temporaries(folder: Path) -> None:
    """Remove temporary files a killed run left behind (only called while holding the lock)."""
    if folder.is_dir():
        for p in folder.glob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                p.unlink()


# ---------------------------------------------------------------------------------------------
# Manifest


def read_manifest(paths: ArtifactPaths) -> Manifest:
    """The manifest, checked for shape, types and arch. Missing -> MissingArtifact (run train first)."""
    try:
        raw = paths.manifest.read_bytes()
    except FileNotFoundError:
        raise MissingArtifact(f"no trained model for {paths.arch} in {paths.root}: run train first") from None
    except OSError as exc:
        raise CorruptArtifact(f"{paths.manifest} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    manifest = Manifest.from_json(raw, str(paths.manifest))
    if manifest.arch != paths.arch:
        raise CorruptArtifact(f"{paths.manifest} describes arch {manifest.arch!r}, not {paths.arch!r}")
    return manifest


def read_verified(paths: ArtifactPaths, manifest: Manifest, name: str, produced_by: str) -> bytes:
    """The bytes of `name`, read once and checked against the manifest's sha256: callers parse
    these very bytes, so a file swapped after the check is never the one that is used."""
    entry = manifest.file(name)
    path = paths.file(name)
    if entry is None:
        if name == WEIGHTS:
            raise MissingArtifact(f"no trained model for {paths.arch} in {paths.root}: run train first")
        raise MissingArtifact(f"no {name} for {paths.arch} in {paths.root}: run {produced_by} first")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingArtifact(f"{path} is recorded in the manifest but missing: run {produced_by} again") from None
    except OSError as exc:
        raise CorruptArtifact(f"{path} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise IntegrityError(
            f"{path} changed after it was written: sha256 {actual} != manifest {entry.sha256}; refusing to load it"
        )
    return data


def commit(paths: ArtifactPaths, stage: str, staged: dict[str, Path], sections: dict[str, Any]) -> Manifest:
    """Move staged files into place and record them and `sections` (Manifest field name -> record)
    in the manifest, crash-safely.

    Files and sections downstream of `stage` (DOWNSTREAM) are dropped: a new model makes the old
    ONNX file and reports meaningless. Returns the new manifest.
    """
    folder = paths.folder
    try:
        manifest = read_manifest(paths) if paths.manifest.exists() else Manifest(arch=paths.arch)
    except (CorruptArtifact, MissingArtifact):
        if stage != "train":
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
            raise
        manifest = Manifest(arch=paths.arch)  # train starts a folder afresh
    drop_files, drop_sections = DOWNSTREAM.get(stage, ((), ()))
    try:
        # 1. Forget what is about to change, so no manifest on disk ever describes a replaced file.
        files = {k: v for k, v in manifest.files.items() if k not in staged and k not in drop_files}
        forgotten = manifest.replace(files=files, **{s: None for s in (*drop_sections, *sections)})
        if forgotten != manifest:
            write_atomic(paths.manifest, forgotten.to_json())
        _fault_point(f"{stage}:forgotten")
        # 2. Stale downstream files go; new files come in.
        for name in drop_files:
            with contextlib.suppress(FileNotFoundError):
                paths.file(name).unlink()
        records = {}
        for name, tmp in staged.items():
            records[name] = FileRecord(sha256_file(tmp), tmp.stat().st_size)
            os.replace(tmp, paths.file(name))
            _fault_point(f"{stage}:replaced:{name}")
        fsync_dir(folder)
        # 3. The new manifest, last.
        new = forgotten.replace(
            files={**forgotten.files, **records},
            updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **sections,
        )
        write_atomic(paths.manifest, new.to_json())
        _fault_point(f"{stage}:committed")
        return new
    except OSError as exc:
        raise write_error(folder, exc) from None
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def update_sections(paths: ArtifactPaths, sections: dict[str, Any]) -> Manifest:
    """Record report sections that describe no new file (serve-check)."""
    return commit(paths, "report", {}, sections)


# ---------------------------------------------------------------------------------------------
# Lock


@contextlib.contextmanager
def run_lock(root: Path, create: bool = True) -> Iterator[None]:
    """Exclusive, non-blocking lock on an artifacts folder for the whole of a writing run.

    create=False (stages that only add to existing artifacts): a folder that does not exist is not
    made; there is nothing to guard, and the stage reports what is missing.
    """
    import fcntl

    if not create and not root.is_dir():
        yield
        return
    ensure_folder(root)
    lock_path = root / LOCK
    try:
        # O_NOFOLLOW: a `.lock` that is a symlink must not make us create or truncate a file elsewhere
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{lock_path} is a symbolic link; refusing to follow it") from None
        raise write_error(lock_path, exc) from None
    import stat

    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"{lock_path} is not a regular file; refusing to use it as a lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLocked(
                f"{root} is in use by another run (pid {holder}); wait for it to finish, or use another --artifacts-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def versions() -> dict[str, str]:
    """Versions of the interpreter and libraries that matter, read without importing them."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime-gpu", "onnxruntime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
