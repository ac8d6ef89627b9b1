"""Artifact folders: file names, atomic writes, the manifest, versions and publication, the lock.

Only this module knows file names. Layout, per model:

    <root>/<name>/candidate/            what the stage commands (train, export, serve-check, verify) write
        weights.safetensors             trained weights (safetensors: no unpickling on load)
        loss_history.json               loss at every step
        loss.png                        loss curve (only when matplotlib works; drawn by a child
                                        process, committed after verify, before publication)
        model.onnx                      the model to ship, self-contained
        verify.json                     the cross-runtime equivalence report
        manifest.json                   written last; names every file above with its sha256
    <root>/<name>/v<N>/                 version N: a copy of a candidate that passed verify, plus
                                        MODEL_CARD.md; created once, never changed afterwards
    <root>/<name>/PUBLISHED             "N": the version predict, ship and serve use (a plain file,
                                        replaced atomically; never a symlink)
    <root>/.lock                        held by a run that writes

Crash safety: every file is written to a temporary file in the same folder, fsynced and moved into
place with os.replace. A stage first rewrites the candidate's manifest without the entries it is
about to replace (and those that depend on them), then moves its files in, then writes the new
manifest. A version folder is built under a temporary name and renamed into place whole; the
pointer is replaced last. So a run killed at any moment leaves the published version intact and
servable, and each candidate file complete (old or new) and described truthfully by its manifest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import (
    ArtifactWriteError,
    CorruptArtifact,
    FolderLocked,
    IntegrityError,
    MissingArtifact,
    UsageError,
)
from .manifest import FileRecord, Manifest

if TYPE_CHECKING:  # pragma: no cover
    from ..spec.archs import Arch

WEIGHTS = "weights.safetensors"
HISTORY = "loss_history.json"
LOSS_PNG = "loss.png"
ONNX = "model.onnx"
VERIFY = "verify.json"
CARD = "MODEL_CARD.md"
MANIFEST = "manifest.json"
LABELS = "labels.txt"  # Triton's label file of a multiclass model, beside its config in a Triton repository
SEAL = "manifest.sha256"  # a version's manifest's sha256, `sha256sum -c` format: an edited manifest is refused
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
CANDIDATE = "candidate"
PUBLISHED = "PUBLISHED"
VERSION_FILES = (WEIGHTS, HISTORY, LOSS_PNG, ONNX, VERIFY, CARD)  # what a version folder may hold
DEFAULT_KEEP = 5

# What each stage's output invalidates downstream: (files, manifest sections).
DOWNSTREAM: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": ((LOSS_PNG, ONNX, VERIFY, CARD), ("export", "serve_check", "verify")),  # loss.png: "plot" adds it
    "export": ((VERIFY, CARD), ("serve_check", "verify")),
    "verify": ((CARD,), ()),
}


@dataclass(frozen=True)
class ArtifactPaths:
    """The files of one model folder: by default `<root>/<name>/candidate` (`name`: the model's name);
    `sub="v3"` for version 3; `at=` for a folder given directly (a shipped copy), which is identified by
    its manifest."""

    root: Path
    name: str
    sub: str = CANDIDATE
    at: Path | None = None
    selector: str = field(default="", compare=False)  # how the command line names the model (for hints)

    @classmethod
    def version(cls, root: Path, name: str, number: int, selector: str = "") -> ArtifactPaths:
        return cls(root, name, f"v{number}", selector=selector)

    def hint(self, cmd: str, when: str = "first") -> str:
        """`run train first (python cli.py train --arch shallow --artifacts-dir ROOT)`: the command that
        fixes what a message about this model names."""
        from ..spec.recipe import hint, selector

        return hint(cmd, self.selector or selector(self.name), when, _dir_option(self.root))

    @classmethod
    def loose(cls, folder: Path) -> ArtifactPaths:
        return cls(folder.parent, "", "", at=folder)

    @property
    def model_root(self) -> Path:
        return self.root / self.name

    @property
    def folder(self) -> Path:
        if self.at is not None:
            return self.at
        return self.model_root / self.sub if self.sub else self.model_root

    @property
    def number(self) -> int | None:
        """The version number, for a version folder."""
        return int(self.sub[1:]) if self.sub.startswith("v") and self.sub[1:].isdigit() else None

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


def _dir_option(root: Path) -> str:
    """`--artifacts-dir ROOT` unless ROOT is the default folder (`artifacts`)."""
    import shlex

    return "" if Path(root) == Path("artifacts") else f"--artifacts-dir {shlex.quote(str(root))}"


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


# ---------------------------------------------------------------------------------------------
# Destinations a user names (`predict --output`, `init --out`, `bench --out`, `sweep --out`, `ship --out`)
#
# A regular file (or nothing) is written to a temporary in the same folder and renamed into place. A
# FIFO or a character device (/dev/null, /dev/stdout, a pipe someone reads) is written through: opened
# for writing, never renamed over (renaming would replace the device node itself). Block devices,
# sockets and other special files are refused, and so is the input file itself (same inode).

OUTPUT_FILE = "file"  # absent or a regular file: staged, then renamed into place
OUTPUT_STREAM = "stream"  # a FIFO, a character device or a symbolic link: written through
OUTPUT_STDOUT = "stdout"  # `-`


def _what_is(mode: int) -> str:
    import stat

    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _stat(path: Path) -> os.stat_result | None:
    """os.stat (following links), None when nothing is there (or a dangling link)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path} cannot be examined ({exc.strerror or exc.__class__.__name__})") from None


def _model_folder_at_or_above(folder: Path) -> Path | None:
    """The first of `folder` (resolved) and its parents that holds a model's artifacts (a manifest.json:
    a candidate, a version or a shipped copy; a PUBLISHED pointer; a candidate with a manifest)."""
    try:
        here = folder.resolve()
    except (OSError, RuntimeError):
        return None
    for p in (here, *here.parents):
        if (p / MANIFEST).is_file() or (p / PUBLISHED).exists() or (p / CANDIDATE / MANIFEST).is_file():
            return p
    return None


def check_output(
    path: Path, option: str, inputs: Sequence[Path | None] = (), input_name: str = "the input file"
) -> str:
    """What writing to `path` (the value of `option`) will do: OUTPUT_STDOUT (`-`), OUTPUT_FILE (staged
    and renamed into place) or OUTPUT_STREAM (a FIFO, a character device, or a symbolic link: written
    through to what it names, never renamed over). A UsageError (exit 2, one line) for a folder, a
    missing parent folder, a block device, a socket or another special file, a dangling link, a file
    inside a model's artifacts (a version, a candidate, a shipped copy: files the manifests
    describe), and one of `inputs` (the same file under any name: a result never overwrites what it
    is computed from)."""
    import stat

    if str(path) == "-":
        return OUTPUT_STDOUT
    path = Path(path)
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        link = False
    except OSError as exc:
        raise UsageError(f"{path} cannot be examined ({exc.strerror or exc.__class__.__name__})") from None
    st = _stat(path)
    if link and st is None:
        raise UsageError(f"{option} {path} is a symbolic link to nothing; give a file to write")
    models = _model_folder_at_or_above(path.parent if str(path.parent) else Path("."))
    if models is not None and not (st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode))):
        raise UsageError(
            f"{option} {path} is inside the model artifacts at {models}, among files the manifests describe; "
            "write elsewhere"
        )
    if st is not None:
        for source in inputs:
            if source is None or str(source) == "-":
                continue
            other = _stat(Path(source))
            if other is not None and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                raise UsageError(f"{option} {path} is {input_name} itself ({source}); write the result elsewhere")
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
            return OUTPUT_STREAM
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{option} {path} is {_what_is(st.st_mode)}; give a file to write")
        if link:  # /dev/stdout -> /proc/self/fd/1 -> a file: write where it leads, keep the link
            return OUTPUT_STREAM
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: its folder {parent} does not exist")
    return OUTPUT_FILE


def check_output_folder(folder: Path, option: str) -> None:
    """A folder a command writes into (`ship --out`, `sweep --out`): absent or a folder (a link to one
    is fine), and not inside a model's artifacts; anything else is a UsageError (exit 2, one line)."""
    import stat

    st = _stat(Path(folder))
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {folder} is {_what_is(st.st_mode)}, not a folder; give a folder")
    models = _model_folder_at_or_above(Path(folder))
    if models is not None:
        raise UsageError(f"{option} {folder} is inside the model artifacts at {models}; write elsewhere")


def write_output(
    path: Path,
    fill: Callable[[IO[bytes]], None],
    option: str,
    inputs: Sequence[Path | None] = (),
    input_name: str = "the input file",
) -> str:
    """Write what `fill(binary file)` writes to `path`, as `check_output` decides (checked again here):
    `-` is stdout; a regular file is staged and renamed into place (readers see the old or the whole
    new file); a FIFO, a character device or a symbolic link is opened and written through. Returns
    the kind. A write error (a full device, say) is ArtifactWriteError (exit 11); a reader that went
    away is BrokenPipeError (the CLI's exit 141)."""
    import stat
    import sys

    path = Path(path)
    kind = check_output(path, option, inputs, input_name)
    if kind == OUTPUT_STDOUT:
        sys.stdout.flush()
        fill(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return kind
    if kind == OUTPUT_STREAM:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise write_error(path, exc) from None
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):  # through a link to a file: it is replaced by what is written
            os.ftruncate(fd, 0)
        elif not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            os.close(fd)  # replaced meanwhile: never write into what was not checked
            raise UsageError(f"{option} {path} changed while it was being opened; try again")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error(path, exc) from None
        return kind

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            fill(f)

    staged = stage_file(path.parent if str(path.parent) else Path("."), path.name, write)
    try:
        os.replace(staged, path)
        fsync_dir(path.parent if str(path.parent) else Path("."))
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    return kind


def write_output_bytes(
    path: Path, data: bytes, option: str, inputs: Sequence[Path | None] = (), input_name: str = "the input file"
) -> str:
    def fill(f: IO[bytes]) -> None:
        f.write(data)

    return write_output(path, fill, option, inputs, input_name)


SWEEPS = "_sweeps"  # <root>/_sweeps/<name>/: sweep results; no recipe (hence no model folder) has this name


def check_outside_models(folder: Path, root: Path, option: str = "--out") -> None:
    """Refuse an output folder inside a model's artifacts (its candidate, a version, the model folder
    itself): files there would sit among files the manifests describe. That is any folder under
    <root>/<a possible model name>/, or at or under any folder holding a model's artifacts."""
    from ..spec.recipe import NAME_RE

    out = Path(folder).resolve()
    base = Path(root).resolve()
    try:
        rel = out.relative_to(base)
    except ValueError:
        rel = None
    if rel is not None and rel.parts and NAME_RE.fullmatch(rel.parts[0]):
        raise UsageError(
            f"{option} {folder}: inside the model folder {base / rel.parts[0]} of {root}; "
            f"choose a folder outside the models (default: {Path(root) / SWEEPS}/<name>)"
        )
    models = _model_folder_at_or_above(out)
    if models is not None:
        raise UsageError(f"{option} {folder}: inside the model artifacts at {models}; choose a folder outside them")


def kind(path: Path) -> str | None:
    """'dir', 'file', 'link' or 'other' for what is at `path` (not following a link); None if nothing."""
    import stat

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise write_error(path, exc) from None
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def read_regular(path: Path) -> bytes:
    """The bytes of `path`, a regular file reached without a symbolic link (`open_regular`).
    FileNotFoundError passes through."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CorruptArtifact(f"{path} is not readable ({exc.strerror or exc.__class__.__name__})") from None


def write_new_file(path: Path, data: bytes) -> None:
    """Create `path` (never an existing one, never through a link) holding `data`, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def build_folder(final: Path, files: Mapping[str, bytes], fault: str | None = None) -> None:
    """Create folder `final` holding exactly `files` (name -> bytes), whole or not at all: built under a
    temporary name beside it (each file created exclusively, never through a link, fsynced, and read
    back against its sha256), then renamed into place; an existing `final` is never replaced. `fault`:
    the test hook's name (`_fault_point`) between staging and the rename."""
    import shutil

    parent = final.parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=parent))
    except OSError as exc:
        raise write_error(final, exc) from None
    try:
        for name, data in files.items():
            write_new_file(tmp / name, data)
        for name, data in files.items():
            if sha256_file(tmp / name) != hashlib.sha256(data).hexdigest():
                raise ArtifactWriteError(f"the copy of {name} written to {tmp} does not read back with its sha256")
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; a server may run as another user
        fsync_dir(tmp)
        if fault:
            _fault_point(fault)
        if kind(final) is not None:  # rename would replace an empty folder: never replace what is there
            raise IntegrityError(f"{final} appeared meanwhile; refusing to replace it")
        os.rename(tmp, final)
        fsync_dir(parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(final, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_folder(path: Path) -> bool:
    """Remove a folder: renamed out of the way first (so no reader ever sees it half-removed), then
    deleted. False when it could not be moved (it stays whole)."""
    import shutil

    doomed = path.parent / f"{TMP_PREFIX}removed-{path.name}.{os.getpid()}"
    try:
        os.rename(path, doomed)
    except OSError:
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def clean_stale_temporaries(folder: Path) -> None:
    """Remove temporary files and folders a killed run left behind (only called while holding the
    lock). Links are removed, never followed."""
    import shutil

    if not folder.is_dir() or folder.is_symlink():
        return
    for p in folder.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


# ---------------------------------------------------------------------------------------------
# Manifest


def open_regular(path: Path) -> int:
    """A read-only descriptor on `path`, which must be a regular file reached without a symbolic link
    (never a FIFO that would block, a device, or a link to elsewhere). FileNotFoundError passes through."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{path} is a symbolic link; refusing to read through it") from None
        raise CorruptArtifact(f"{path} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"{path} is not a regular file")
    return fd


def read_manifest(paths: ArtifactPaths) -> Manifest:
    """The manifest, checked for shape, types and arch, and (a version's, schema 4 on) against its
    seal. Missing -> MissingArtifact (run train first)."""
    return read_manifest_bytes(paths)[0]


def read_manifest_bytes(paths: ArtifactPaths) -> tuple[Manifest, bytes, bytes | None]:
    """(the manifest, the very bytes it was parsed from, the seal's bytes or None): what `ship` copies
    is what was checked. A sealed manifest (a version's, made by `create_version`; schema 4 on) must
    match the sha256 its seal (`manifest.sha256`, written with the version) holds: a manifest edited
    afterwards, by hand or by another tool, is an IntegrityError (exit 6). A copy outside the artifacts
    (`ArtifactPaths.loose`: a Triton version folder) is checked when its seal was shipped with it.
    Older versions (schema 1-3) have no seal and are read as before."""
    try:
        raw = paths.manifest.read_bytes()
    except FileNotFoundError:
        raise MissingArtifact(f"no trained model for {paths.name} in {paths.root}: {paths.hint('train')}") from None
    except OSError as exc:
        raise CorruptArtifact(f"{paths.manifest} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    manifest = Manifest.from_json(raw, str(paths.manifest))
    if paths.at is None and manifest.name != paths.name:
        raise CorruptArtifact(f"{paths.manifest} describes arch {manifest.name!r}, not {paths.name!r}")
    seal = _read_seal(paths) if paths.sub != CANDIDATE or paths.at is not None else None
    if seal is not None:  # a seal is always checked, whatever the manifest says of itself
        check_seal(raw, seal, str(paths.manifest), paths)
    elif manifest.sealed and manifest.schema >= 4 and paths.at is None:  # a version of this release, its seal gone
        check_seal(raw, None, str(paths.manifest), paths)
    return manifest, raw, seal


def seal_of(raw: bytes) -> bytes:
    """The seal of a manifest's bytes: `<sha256>  manifest.json`, as `sha256sum` writes it."""
    return f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n".encode()


def check_seal(raw: bytes, seal: bytes | None, where: str, paths: ArtifactPaths | None = None) -> None:
    """IntegrityError unless `seal` is the seal of `raw`."""
    fix = (
        f"restore it, or {paths.hint('all', 'again')} to make a new version"
        if paths is not None and paths.name
        else "restore it, or make a new version"
    )
    if seal is None:
        raise IntegrityError(f"{where}: its seal {SEAL} is missing, so nothing vouches for the manifest; {fix}")
    recorded = seal.split(b" ", 1)[0].decode("ascii", errors="replace").strip()
    actual = hashlib.sha256(raw).hexdigest()
    if recorded != actual:
        raise IntegrityError(
            f"{where} was changed after the version was made (sha256 {actual[:16]}..., its {SEAL} says "
            f"{recorded[:16]}...); an edited manifest is refused: {fix}"
        )


def _read_seal(paths: ArtifactPaths) -> bytes | None:
    try:
        fd = open_regular(paths.file(SEAL))
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 256)
    finally:
        os.close(fd)


def read_verified(paths: ArtifactPaths, manifest: Manifest, name: str, produced_by: str) -> bytes:
    """The bytes of `name`, read once and checked against the manifest's sha256: callers parse
    these very bytes, so a file swapped after the check is never the one that is used."""
    entry = manifest.file(name)
    path = paths.file(name)
    if paths.sub != CANDIDATE or paths.at is not None:
        produced_by = "all"  # a version (or a shipped copy) is never rewritten: a new version is the fix
    if entry is None:
        if name == WEIGHTS:
            raise MissingArtifact(f"no trained model for {paths.name} in {paths.root}: {paths.hint('train')}")
        raise MissingArtifact(f"no {name} for {paths.name} in {paths.root}: {paths.hint(produced_by)}")
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise MissingArtifact(
            f"{path} is recorded in the manifest but missing: {paths.hint(produced_by, 'again')}"
        ) from None
    try:  # never more bytes than the manifest recorded (+1 to notice more)
        chunks, left = [], max(entry.bytes, 0) + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise CorruptArtifact(f"{path} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    finally:
        os.close(fd)
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise IntegrityError(
            f"{path} changed after it was written: sha256 {actual} != manifest {entry.sha256}; refusing to load it"
        )
    return data


def commit(
    paths: ArtifactPaths, stage: str, staged: dict[str, Path], sections: dict[str, Any], base: Manifest | None = None
) -> Manifest:
    """Move staged files into place and record them and `sections` (Manifest field name -> record)
    in the manifest, crash-safely. `base`: the manifest as the caller read it under the same lock
    (not read again); by default it is read here.

    Files and sections downstream of `stage` (DOWNSTREAM) are dropped: a new model makes the old
    ONNX file and reports meaningless. Returns the new manifest.
    """
    folder = paths.folder
    try:
        if base is not None:
            manifest = base
        else:
            manifest = read_manifest(paths) if paths.manifest.exists() else Manifest(name=paths.name)
    except (CorruptArtifact, MissingArtifact):
        if stage != "train":
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
            raise
        manifest = Manifest(name=paths.name)  # train starts a folder afresh
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


def update_sections(paths: ArtifactPaths, sections: dict[str, Any], base: Manifest | None = None) -> Manifest:
    """Record report sections that describe no new file (validate, serve-check)."""
    return commit(paths, "report", {}, sections, base)


# ---------------------------------------------------------------------------------------------
# Lock


@contextlib.contextmanager
def run_lock(root: Path, create: bool = True, remove: bool = False) -> Iterator[None]:
    """Exclusive, non-blocking lock on an artifacts folder for the whole of a writing run.

    create=False (stages that only add to existing artifacts): a folder that does not exist is not
    made; there is nothing to guard, and the stage reports what is missing. remove=True (a Triton
    repository, whose tree is shipped as it is): the lock file is removed before the lock is let go,
    so nothing is left behind; a run that opened the file just before it went finds, once it holds
    the lock, that the name no longer names its file, and reports the folder as in use.
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
        if remove and not _names_file(lock_path, fd):  # removed by its holder as we opened it
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise FolderLocked(f"{root} is in use by another run; wait for it to finish, or use another folder")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                if remove:
                    lock_path.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _names_file(path: Path, fd: int) -> bool:
    """`path` (not followed) is the file open as `fd`."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


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


def check_model_dirs(root: Path, name: str) -> None:
    """Before writing: <root>/<name> and its candidate folder must be real folders, never links
    (a link there would make us write somewhere else). `root` itself may be a link."""
    for folder in (root / name, root / name / CANDIDATE):
        if folder.is_symlink():
            raise IntegrityError(f"{folder} is a symbolic link; refusing to write through it")
        if folder.exists() and not folder.is_dir():
            raise IntegrityError(f"{folder} is not a folder")


def arch_of(manifest: Manifest, where: str) -> Arch:
    """The network a manifest describes: its `model` section, or (schema 1 and 2, built-ins only) the
    built-in of that name."""
    from ..spec.archs import Arch, builtin_archs

    if manifest.model is not None:
        arch = Arch.from_record(manifest.model, where)
        if arch.name != manifest.name:
            raise CorruptArtifact(f"{where}: its model section describes {arch.name!r}, not {manifest.name!r}")
        return arch
    builtin = builtin_archs().get(manifest.name)
    if builtin is None:
        raise CorruptArtifact(f"{where} describes an unknown model {manifest.name[:40]!r} and no model section")
    return builtin
