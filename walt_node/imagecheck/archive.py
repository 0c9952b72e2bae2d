"""Image archives read without a container engine.

Three forms, as container tools write them:

- a ``docker save`` / ``podman save`` archive (docker-archive): a tar file
  with ``manifest.json`` naming the config JSON and the layer tars;
- an OCI archive (``podman save --format oci-archive``, ``skopeo copy
  oci-archive:``, a tarred ``umoci`` layout): a tar file with ``index.json``
  and ``blobs/<algorithm>/<digest>``;
- the same OCI layout as a directory (``oci-layout`` and ``index.json``).

The labels come from the image config (``config.Labels``); the files from
the layers, applied in order, whiteouts included (``.wh.<name>`` deletes
``<name>`` from the layers below, ``.wh..wh..opq`` empties its directory).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Tuple

from walt_node.errors import WaltNodeError
from walt_node.imagecheck.tree import Entry, LayeredTree, normalize

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
INDEX_MEDIA_TYPES = ("application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json")


class ArchiveProblem(WaltNodeError):
    """The archive cannot be read as an image; the message says why and what to do."""

    exit_status = 2


@dataclass
class ImageArchive:
    format: str  # "docker-archive", "oci-archive" or "oci-layout"
    tree: LayeredTree
    labels: Dict[str, str]
    names: List[str] = field(default_factory=list)  # repository tags, when the archive has some
    closers: List[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for closer in self.closers:
            closer()


# ------------------------------------------------------------------ blob stores

class _Store:
    """Named files of an archive: members of an outer tar, or files of a directory."""

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        with self.open(name) as stream:
            return stream.read()

    def json(self, name: str):
        try:
            return json.loads(self.read(name))
        except (ValueError, UnicodeDecodeError) as error:
            raise ArchiveProblem(f"{name} in the archive is not valid JSON: {error}") from None


class _TarStore(_Store):
    def __init__(self, path: Path):
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {normalize(m.name).lstrip("/"): m for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError) as error:
            raise ArchiveProblem(f"{path}: not a readable tar archive ({error}); give an image "
                                 "root directory or a 'docker save'/'podman save'/OCI archive") from None

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        stream = self.tar.extractfile(member) if member is not None else None
        if stream is None:
            raise ArchiveProblem(f"the archive has no file {name}: it is incomplete")
        return stream


class _DirStore(_Store):
    def __init__(self, path: Path):
        self.path = path

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def open(self, name: str) -> IO[bytes]:
        try:
            return open(self.path / name, "rb")
        except OSError as error:
            raise ArchiveProblem(f"the OCI layout has no readable {name}: {error.strerror}") from None


# ------------------------------------------------------------------ manifests

def _blob_name(descriptor: dict) -> str:
    digest = str(descriptor.get("digest", ""))
    algorithm, _, value = digest.partition(":")
    if not value or "/" in value or "/" in algorithm:
        raise ArchiveProblem(f"bad digest '{digest}' in the OCI index or manifest")
    return f"blobs/{algorithm}/{value}"


def _oci_manifest(store: _Store) -> Tuple[dict, List[str]]:
    index = store.json("index.json")
    names: List[str] = []
    for _ in range(8):  # an index may point to another index (multi-platform)
        manifests = index.get("manifests") or []
        if not manifests:
            raise ArchiveProblem("the OCI index lists no image manifest")
        if len(manifests) > 1:
            raise ArchiveProblem(f"the OCI index lists {len(manifests)} images; save one image "
                                 "per archive to check it")
        descriptor = manifests[0]
        ref = (descriptor.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if ref:
            names.append(ref)
        document = store.json(_blob_name(descriptor))
        if document.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in document:
            index = document
            continue
        config = store.json(_blob_name(document.get("config") or {}))
        layers = [_blob_name(layer) for layer in document.get("layers") or []]
        return config, layers + [f"names:{name}" for name in names]
    raise ArchiveProblem("OCI indexes nested too deep")


def _docker_manifest(store: _Store) -> Tuple[dict, List[str]]:
    manifest = store.json("manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ArchiveProblem("manifest.json lists no image")
    if len(manifest) > 1:
        raise ArchiveProblem(f"manifest.json lists {len(manifest)} images; save one image per "
                             "archive to check it")
    entry = manifest[0]
    config = store.json(normalize(str(entry.get("Config", ""))).lstrip("/"))
    layers = [normalize(str(layer)).lstrip("/") for layer in entry.get("Layers") or []]
    return config, layers + [f"names:{name}" for name in entry.get("RepoTags") or []]


# ------------------------------------------------------------------ layers

def _seekable_layer(stream: IO[bytes]) -> IO[bytes]:
    """An uncompressed, seekable copy of a layer (compressed layers go to a temporary file)."""
    head = stream.read(6)
    stream.seek(0)
    opener: Optional[Callable[[IO[bytes]], IO[bytes]]] = None
    if head[:2] == b"\x1f\x8b":
        opener = lambda raw: gzip.GzipFile(fileobj=raw)  # noqa: E731
    elif head == b"\xfd7zXZ\x00":
        opener = lzma.LZMAFile
    elif head[:3] == b"BZh":
        opener = bz2.BZ2File
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        raise ArchiveProblem("a layer is compressed with zstd, which Python cannot read without "
                             "extra modules; save the image with gzip or uncompressed layers "
                             "(e.g. 'podman save --format docker-archive')")
    if opener is None:
        return stream
    copy = tempfile.TemporaryFile()
    try:
        shutil.copyfileobj(opener(stream), copy, 1 << 20)
    except (OSError, EOFError, lzma.LZMAError) as error:
        copy.close()
        raise ArchiveProblem(f"a compressed layer is corrupt: {error}") from None
    copy.seek(0)
    return copy


def _apply_layer(entries: Dict[str, Entry], layer: tarfile.TarFile, number: int) -> None:
    members = layer.getmembers()
    # Whiteouts delete what the layers *below* hold, whatever their place in this tar.
    for member in members:
        path = normalize(member.name)
        parent, name = posixpath.split(path)
        if name == OPAQUE_WHITEOUT:
            _delete_below(entries, parent, keep_directory=True)
        elif name.startswith(WHITEOUT_PREFIX):
            _delete_below(entries, posixpath.join(parent, name[len(WHITEOUT_PREFIX):]))
    for member in members:
        path = normalize(member.name)
        name = posixpath.basename(path)
        if path == "/" or name.startswith(WHITEOUT_PREFIX):
            continue
        entry = _entry_of(member, layer, number, entries)
        old = entries.get(path)
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            _delete_below(entries, path)
        entries[path] = entry


def _entry_of(member: tarfile.TarInfo, layer: tarfile.TarFile, number: int,
              entries: Dict[str, Entry]) -> Entry:
    mode = member.mode & 0o7777
    if member.issym():
        return Entry("symlink", mode, target=member.linkname)
    if member.isdir():
        return Entry("dir", mode)
    if member.islnk():  # a hard link shares the content (and size) of the file it names
        linked = entries.get(normalize(member.linkname))
        if linked is not None and linked.kind == "file":
            return Entry("file", mode, linked.size, ref=linked.ref)
        return Entry("other", mode)
    if member.isfile():
        return Entry("file", mode, member.size, ref=(layer, member, number))
    return Entry("other", mode)


def _delete_below(entries: Dict[str, Entry], path: str, keep_directory: bool = False) -> None:
    prefix = path.rstrip("/") + "/"
    for name in [name for name in entries if name.startswith(prefix)]:
        del entries[name]
    if not keep_directory:
        entries.pop(path, None)


def _read_member(entry: Entry) -> bytes:
    layer, member, number = entry.ref
    try:
        stream = layer.extractfile(member)
    except (KeyError, tarfile.TarError) as error:
        raise ArchiveProblem(f"layer {number}: cannot read {member.name} ({error})") from None
    if stream is None:
        raise ArchiveProblem(f"layer {number}: {member.name} has no content")
    return stream.read()


# ------------------------------------------------------------------ entry point

def is_oci_layout(path: Path) -> bool:
    return path.is_dir() and (path / "index.json").is_file() and (path / "oci-layout").is_file()


def open_archive(path: Path) -> ImageArchive:
    """Read the image of a docker-archive, an OCI archive or an OCI layout directory."""
    path = Path(path)
    store: _Store
    if path.is_dir():
        store, kind = _DirStore(path), "oci-layout"
    else:
        store = _TarStore(path)
        kind = "docker-archive" if store.has("manifest.json") else "oci-archive"
        if kind == "oci-archive" and not store.has("index.json"):
            raise ArchiveProblem(f"{path}: a tar file but not an image archive (neither "
                                 "manifest.json nor index.json in it); give an image root "
                                 "directory or a 'docker save'/'podman save'/OCI archive")
    config, layer_names = (_docker_manifest if kind == "docker-archive" else _oci_manifest)(store)
    names = [name[len("names:"):] for name in layer_names if name.startswith("names:")]
    layer_names = [name for name in layer_names if not name.startswith("names:")]
    labels = (config.get("config") or {}).get("Labels") or {}
    entries: Dict[str, Entry] = {}
    archive = ImageArchive(kind, LayeredTree(entries, _read_member, f"{kind} {path}"),
                           {str(k): str(v) for k, v in labels.items()}, names)
    if isinstance(store, _TarStore):
        archive.closers.append(store.tar.close)
    for number, name in enumerate(layer_names, start=1):
        stream = _seekable_layer(store.open(name))
        archive.closers.append(stream.close)
        try:
            layer = tarfile.open(fileobj=stream, mode="r:")
            _apply_layer(entries, layer, number)
        except tarfile.TarError as error:
            archive.close()
            raise ArchiveProblem(f"layer {number} ({name}) is not a readable tar: {error}") from None
    return archive

