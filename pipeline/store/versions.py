"""Versions: the one module that finds, checks, lists, creates and publishes them. Torch-free.

    <root>/<name>/v<N>/       version N: a candidate that passed verify, its model card and its
                              manifest's seal; created whole (built under a temporary name, renamed
                              into place), never changed afterwards
    <root>/<name>/PUBLISHED   "N": the version predict, ship and serve use (a plain file, replaced
                              atomically, last)

Readers get a `Version`: its folder, the one manifest that was checked (against its seal) and the
bytes of every file it lists, each read once and hashed against the manifest. `ship`, `verify
--version`, `predict` and `serve` use those bytes and that manifest; none reads a checked file again.

A folder in the layout of older releases (files directly in `<root>/<name>/`) is read as version 1
when it verifies, else refused; a writer migrates it (`migrate_legacy`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptArtifact, MissingArtifact, PipelineError
from . import artifacts as A
from .manifest import SCHEMA, FileRecord, Manifest

NoticeFn = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class Version:
    """A version read and checked: its folder, the manifest that was checked (the very bytes parsed,
    and its seal's), and the bytes of every file the manifest lists, each hashed against it."""

    paths: A.ArtifactPaths
    manifest: Manifest
    manifest_bytes: bytes
    seal: bytes | None
    files: Mapping[str, bytes]
    number: int

    @property
    def verified(self) -> bool:
        """A passing verify record, and the report it refers to."""
        return self.manifest.verify is not None and self.manifest.verify.passed and A.VERIFY in self.files


@dataclass(frozen=True)
class VersionInfo:
    number: int
    published: bool
    created: str | None
    final_loss: float | None
    onnx_sha256: str | None
    verified: bool  # every file intact (the manifest matching its seal) and a passing verify record
    problem: str | None = None  # why it does not verify (an edited manifest, a changed file...)


@dataclass(frozen=True)
class Published:
    name: str  # the model's name (its folder)
    number: int
    new: bool  # False: this candidate already was version `number`; the pointer moved back to it
    pruned: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------------------
# The folders and the pointer


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def list_versions(root: Path, name: str) -> list[int]:
    """Version numbers present for model `name`, ascending (folders v<N>; links are not versions)."""
    folder = root / name
    if not _is_real_dir(folder):
        return []
    out = []
    for p in folder.iterdir():
        if p.name.startswith("v") and p.name[1:].isdigit() and not p.name[1:].startswith("0") and _is_real_dir(p):
            out.append(int(p.name[1:]))
    return sorted(out)


def read_published(root: Path, name: str) -> int | None:
    """The published version number, or None when nothing is published. The pointer must be a plain
    file holding a number: anything else is refused."""
    path = root / name / A.PUBLISHED
    try:
        fd = A.open_regular(path)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not text.isdigit() or len(text) > 9 or int(text) < 1 or text != str(int(text)):
        raise CorruptArtifact(f"{path} does not name a version ({text[:20]!r})")
    return int(text)


def set_published(root: Path, name: str, number: int) -> None:
    """Point PUBLISHED at version `number` (atomically: readers see the old or the new number)."""
    A.write_atomic(root / name / A.PUBLISHED, f"{number}\n".encode())
    A._fault_point("publish:pointer")


def create_version(root: Path, name: str, files: dict[str, bytes], manifest: Manifest) -> int:
    """Write a new version folder v<N> (N = highest + 1) holding `files` and `manifest` (which must
    describe them), sealed. Built under a temporary name, fsynced, renamed into place: whole or absent."""
    folder = root / name
    taken = (
        [int(p.name[1:]) for p in folder.iterdir() if p.name[:1] == "v" and p.name[1:].isdigit()]
        if folder.is_dir()
        else []
    )
    number = max(taken, default=0) + 1  # past any entry named v<N>, even one that is not a version folder
    A.ensure_folder(folder)
    text = manifest.replace(version=number, schema=SCHEMA, sealed=True).to_json()
    # fails if v<N> appeared meanwhile: a version is never overwritten
    A.build_folder(
        folder / f"v{number}", {**files, A.MANIFEST: text, A.SEAL: A.seal_of(text)}, "publish:version-staged"
    )
    return number


def prune_versions(root: Path, name: str, keep: int) -> list[int]:
    """Remove the oldest versions beyond `keep`; the published one is never removed."""
    published = read_published(root, name)
    versions = list_versions(root, name)
    removable = [n for n in versions if n != published]
    excess = len(versions) - max(keep, 1)
    removed = []
    for n in removable[: max(excess, 0)]:
        if A.remove_folder(root / name / f"v{n}"):  # renamed first: never seen half-removed
            removed.append(n)
    return removed


def has_legacy_layout(root: Path, name: str) -> bool:
    """A folder written by an older version of this tool: files directly in <root>/<name>/."""
    return (root / name / A.MANIFEST).is_file()


# ---------------------------------------------------------------------------------------------
# Readers: find a version, check it, hand over its bytes


def resolve_version(root: Path | str, name: str, version: int | None = None, selector: str = "") -> A.ArtifactPaths:
    """The folder of the published version of model `name` (or of version `version`). A folder in the
    layout of older releases is read as version 1 when it verifies, else refused. `selector`: how the
    command line names the model (`--recipe iris.toml`), for the hints."""
    root = Path(root)
    if version is None:
        number = read_published(root, name)
        if number is None:
            if has_legacy_layout(root, name):
                return _legacy(root, name, selector)
            fix = A.ArtifactPaths(root, name, selector=selector).hint("all")
            raise MissingArtifact(f"no published version of {name} in {root}: {fix}")
    else:
        number = version
    paths = A.ArtifactPaths.version(root, name, number, selector=selector)
    if not _is_real_dir(paths.folder):
        if version is None:
            raise CorruptArtifact(f"{root / name / A.PUBLISHED} names version {number}, which is missing")
        have = ", ".join(map(str, list_versions(root, name))) or "none"
        raise MissingArtifact(f"{name} has no version {number} in {root} (versions: {have})")
    return paths


def read_version(
    paths: A.ArtifactPaths, require_verified: bool = True, head: tuple[Manifest, bytes, bytes | None] | None = None
) -> Version:
    """Every file of the version in `paths` read once and hashed against its manifest (itself checked
    against its seal); with `require_verified`, a passing verify record is required too. `head`: the
    manifest as `artifacts.read_manifest_bytes` already read it (not read again)."""
    manifest, raw, seal = head if head is not None else A.read_manifest_bytes(paths)
    files = {name: A.read_verified(paths, manifest, name, "verify") for name in manifest.files}
    v = Version(paths, manifest, raw, seal, files, paths.number or manifest.version or 1)
    if require_verified and (manifest.verify is None or not manifest.verify.passed):
        raise CorruptArtifact(f"{paths.folder} has no passing verify record")
    return v


def check_version(
    root: Path | str, name: str, number: int | None = None, selector: str = "", require_verified: bool = True
) -> Version:
    """Version `number` of model `name` (None: the published one), read and checked: it exists, every
    file has its recorded sha256, its manifest its seal, and (`require_verified`) it passed verify."""
    return read_version(resolve_version(root, name, number, selector), require_verified)


def _legacy(root: Path, name: str, selector: str = "") -> A.ArtifactPaths:
    """Files directly in <root>/<name>/ (an older release): version 1 if its record says verified and
    every file still has its recorded sha256."""
    paths = A.ArtifactPaths(root, name, "", selector=selector)
    try:
        read_version(paths)
    except PipelineError:
        raise CorruptArtifact(
            f"{paths.folder} was made by an older version of this tool and does not verify; {paths.hint('all', 'again')}"
        ) from None
    return paths


def list_model_versions(root: Path | str, name: str) -> list[VersionInfo]:
    """Every version of model `name`, oldest first, each checked (read-only): a version that does not
    verify says why, and shows no figure from a manifest that failed its checks."""
    root = Path(root)
    try:
        published = read_published(root, name)
    except PipelineError:
        published = None
    out = []
    for number in list_versions(root, name):
        problem, m = None, None
        try:
            m = check_version(root, name, number).manifest
        except PipelineError as exc:
            problem = str(exc)
            with contextlib.suppress(PipelineError):  # figures only from a manifest that checks out
                m = A.read_manifest(A.ArtifactPaths.version(root, name, number))
        onnx = m.file(A.ONNX) if m else None
        out.append(
            VersionInfo(
                number=number,
                published=number == published,
                created=m.published_at if m else None,
                final_loss=m.train.final_loss if m and m.train else None,
                onnx_sha256=onnx.sha256 if onnx else None,
                verified=problem is None,
                problem=problem,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Writers (under the artifacts lock, which the caller holds)


def publish_candidate(
    root: Path,
    name: str,
    card: Callable[[Manifest], str],
    keep: int,
    selector: str = "",
    manifest: Manifest | None = None,
) -> Published:
    """The candidate just passed verify: copy it into a new version (with its model card, `card(manifest)`)
    and point PUBLISHED at it; keep the newest `keep` versions (never the published one). A candidate
    that already is an intact version points PUBLISHED back at it. `manifest`: the candidate's, as
    verify committed it under the same lock (not read again). The files are read (and hashed against
    it) once more here: they are the bytes copied into the version."""
    paths = A.ArtifactPaths(root, name, selector=selector)
    manifest = manifest if manifest is not None else A.read_manifest(paths)
    if manifest.verify is None or not manifest.verify.passed:
        raise CorruptArtifact(f"{paths.manifest} does not record a passing verify")
    files = {n: A.read_verified(paths, manifest, n, "verify") for n in manifest.files if n in A.VERSION_FILES}
    onnx, weights = manifest.file(A.ONNX), manifest.file(A.WEIGHTS)
    for number in reversed(list_versions(root, name)):
        try:
            at = resolve_version(root, name, number)
            head = A.read_manifest_bytes(at)
            if head[0].file(A.ONNX) != onnx or head[0].file(A.WEIGHTS) != weights:
                continue
            read_version(at, head=head)  # every file intact: never point at a damaged version
        except PipelineError:
            continue
        set_published(root, name, number)
        return Published(name, number, new=False)
    files[A.CARD] = card(manifest).encode()
    records = {n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    number = create_version(root, name, files, manifest.replace(files=records, published_at=now))
    set_published(root, name, number)
    return Published(name, number, new=True, pruned=tuple(prune_versions(root, name, keep)))


def publish(root: Path, name: str, number: int, selector: str = "") -> Published:
    """Point PUBLISHED at an existing version after checking every file of it (a rollback)."""
    A.check_model_dirs(root, name)
    check_version(root, name, number, selector)
    set_published(root, name, number)
    return Published(name, number, new=False)


def migrate_legacy(root: Path, name: str, on_notice: NoticeFn | None = None, selector: str = "") -> None:
    """Under the lock: an older release's folder becomes version 1 if it verifies; otherwise its
    files (never verified, never servable) are removed, with a notice."""
    if not has_legacy_layout(root, name):
        return
    paths = A.ArtifactPaths(root, name, "", selector=selector)
    try:
        manifest = read_version(_legacy(root, name, selector)).manifest
        files = {n: A.read_verified(paths, manifest, n, "all") for n in manifest.files if n in A.VERSION_FILES}
        if not list_versions(root, name):
            records = {n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()}
            number = create_version(
                root, name, files, manifest.replace(schema=SCHEMA, files=records, published_at=manifest.updated)
            )
            set_published(root, name, number)
            if on_notice:
                on_notice(f"{paths.folder}: made by an older version of this tool; verified, kept as version {number}")
    except CorruptArtifact:
        if on_notice:
            on_notice(f"{paths.folder}: made by an older version of this tool and not verified; its files were removed")
    for file in (A.MANIFEST, *A.VERSION_FILES):  # the manifest first: never one that describes missing files
        with contextlib.suppress(FileNotFoundError):
            (paths.folder / file).unlink()
