"""Model registry: which models exist, where to get them, and a per-user download cache.

``resources/Models.json`` (package data) lists the bundled/published models (schema documented in
``resources/Models.schema.json``). Models a user adds are recorded in
``user_models.json`` inside the cache folder, never in the repository's file.
Downloads are verified against their SHA-256 before they are renamed into the cache,
so the cache never holds a half-downloaded or tampered file under its final name.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from SpineSegDiffLib.core.atomic import atomic_path, write_text
from SpineSegDiffLib.core.caches import USER_REGISTRY_NAME
from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.core.labels import BY_KEY

REGISTRY_SCHEMA_VERSION = 1
# package data (pyproject's package-data), found the same way in a checkout, a wheel and
# the Slicer extension's copy of the engine
RESOURCES = Path(str(importlib.resources.files("SpineSegDiffLib") / "resources"))
BUNDLED_REGISTRY = RESOURCES / "Models.json"
BUNDLED_DEMO_MODEL = RESOURCES / "models" / "spinesegdiff-demo.zip"
DOWNLOAD_CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60

ProgressCallback = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REMOTE_SCHEMES = ("http", "https", "file")

# every entry key and its JSON type; Models.schema.json documents the same rules
_ENTRY_FIELDS: dict[str, type] = {
    "id": str, "title": str, "version": str, "url": str, "sha256": str, "size_bytes": int,
    "labels": list, "modality": str, "sequences": list, "training_data": str,
    "license": str, "description": str,
}


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry. ``url`` is http(s)://, file:// or a local path (relative = repo)."""

    id: str
    title: str
    version: str
    url: str
    sha256: str
    size_bytes: int
    labels: tuple[str, ...]
    modality: str
    sequences: tuple[str, ...]
    training_data: str
    license: str
    description: str
    source: str = field(default="bundled", compare=False)  # "bundled" or "user"

    @property
    def is_remote(self) -> bool:
        return urllib.parse.urlparse(self.url).scheme in _REMOTE_SCHEMES

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data["labels"], data["sequences"] = list(self.labels), list(self.sequences)
        return data


# ---------------------------------------------------------------- reading

def validate_registry(data: Any, source: str | os.PathLike, origin: str = "bundled") -> list[ModelEntry]:
    """Check a parsed registry (required keys, types, ids, checksums); return its entries."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ModelError(f"{source}: a model registry is a JSON object with a 'models' list")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{source}: 'schema_version' should be an integer")
    if version > REGISTRY_SCHEMA_VERSION:
        raise ModelError(f"{source}: registry schema {version} was made by a newer SpineSegDiff; "
                         "update SpineSegDiff")
    entries, seen = [], set()
    for index, item in enumerate(data["models"]):
        name = item.get("id", f"#{index}") if isinstance(item, dict) else f"#{index}"
        where = f"{source}: model '{name}'"
        if not isinstance(item, dict):
            raise ModelError(f"{where} is not a JSON object")
        extra = sorted(set(item) - set(_ENTRY_FIELDS))
        if extra:
            raise ModelError(f"{where}: unknown keys {extra}; check their spelling")
        for key, kind in _ENTRY_FIELDS.items():
            if key not in item:
                raise ModelError(f"{where} lacks '{key}'; fix the registry file")
            value = item[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ModelError(f"{where}: '{key}' should be a {kind.__name__}")
        entry = _entry_from_dict(item, origin)
        _check_entry(entry, where)
        if (entry.id, entry.version) in seen:
            raise ModelError(f"{where} version {entry.version} is listed twice; keep one")
        seen.add((entry.id, entry.version))
        entries.append(entry)
    return entries


def _entry_from_dict(item: dict[str, Any], origin: str) -> ModelEntry:
    values = {key: item[key] for key in _ENTRY_FIELDS}
    values["labels"] = tuple(values["labels"])
    values["sequences"] = tuple(values["sequences"])
    return ModelEntry(**values, source=origin)


def _check_entry(entry: ModelEntry, where: str) -> None:
    if not _ID.match(entry.id):
        raise ModelError(f"{where}: id should be lowercase letters, digits, '.', '_' or '-'")
    if not entry.url:
        raise ModelError(f"{where}: url is empty")
    if entry.sha256 and not _SHA256.match(entry.sha256):
        raise ModelError(f"{where}: sha256 should be 64 lowercase hex digits")
    if entry.is_remote and not entry.sha256:
        # an unverified download could be anything: only local bundled files may omit it
        raise ModelError(f"{where}: a downloadable model needs its sha256")
    if entry.size_bytes < 0:
        raise ModelError(f"{where}: size_bytes should be >= 0 (0 = unknown)")
    unknown = [k for k in entry.labels if k not in BY_KEY]
    if unknown or not entry.labels:
        raise ModelError(f"{where}: labels {list(entry.labels)} should be some of {list(BY_KEY)}")
    if not all(isinstance(s, str) for s in entry.sequences):
        raise ModelError(f"{where}: sequences should be strings")


def _read_registry_file(path: Path, origin: str) -> list[ModelEntry]:
    if not path.is_file():
        raise ModelError(f"model registry {path} not found; reinstall SpineSegDiff")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); fix or restore the file") from None
    return validate_registry(data, path, origin)


def load_registry(path: str | os.PathLike | None = None) -> list[ModelEntry]:
    """The entries of a registry file (default: the bundled ``resources/Models.json``)."""
    return _read_registry_file(Path(path) if path else BUNDLED_REGISTRY, "bundled")


def cache_dir() -> Path:
    """Per-user model cache (see ``core.caches.models_dir``)."""
    from SpineSegDiffLib.core.caches import models_dir

    return models_dir()


def user_registry_path() -> Path:
    return cache_dir() / USER_REGISTRY_NAME


def load_user_models() -> list[ModelEntry]:
    path = user_registry_path()
    return _read_registry_file(path, "user") if path.is_file() else []


def all_models() -> list[ModelEntry]:
    """Bundled models, then the user's (a user model with the same id comes later and wins)."""
    return load_registry() + load_user_models()


# ---------------------------------------------------------------- resolving

def resolve_model(entry_or_id_or_path: ModelEntry | str | os.PathLike,
                  progress: ProgressCallback | None = None) -> Path:
    """A local path to the model file: a given path, a local entry, or a verified download."""
    target = entry_or_id_or_path
    if not isinstance(target, ModelEntry):
        target = _find(target)
        if isinstance(target, Path):
            return target
    if target.is_remote:
        return _cached_download(target, progress)
    path = Path(target.url).expanduser()
    path = path if path.is_absolute() else RESOURCES / path
    if not path.is_file():
        raise ModelError(f"model file {path} for '{target.id}' not found; reinstall SpineSegDiff "
                         "or add the model again")
    if target.sha256:
        _verify(path, target.sha256, f"model file {path}")
    return path


def _find(name: str | os.PathLike) -> ModelEntry | Path:
    # an existing file wins, so a plain path works even if a user registry is broken
    text = str(name)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    matches = [e for e in all_models() if e.id == text]
    if matches:
        return matches[-1]  # the latest addition (user models come last)
    if text.endswith(".zip") or "/" in text or os.sep in text:
        raise ModelError(f"model file {text} not found; check the path")
    known = ", ".join(sorted({e.id for e in all_models()})) or "none"
    raise ModelError(f"unknown model '{text}' (known: {known}); give a model id or a .zip path")


def _verify(path: Path, expected: str, what: str) -> None:
    from SpineSegDiffLib.core.hashing import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(f"{what}: checksum mismatch: expected {expected}, got {actual}; "
                         "the file may be corrupt, download or install it again")


def _cached_download(entry: ModelEntry, progress: ProgressCallback | None) -> Path:
    from SpineSegDiffLib.core.hashing import sha256_file

    destination = cache_dir() / f"{entry.id}-{entry.version}.zip"
    if destination.is_file() and sha256_file(destination) == entry.sha256:
        return destination  # verified earlier download: no network needed
    _download(entry, destination, progress)
    return destination


def _download(entry: ModelEntry, destination: Path, progress: ProgressCallback | None) -> None:
    import hashlib

    digest = hashlib.sha256()
    done = 0
    # atomic_path: the data goes to a '.part' temp file that is deleted on any failure
    with atomic_path(destination) as part:
        try:
            with urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                    open(part, "wb") as out:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else (entry.size_bytes or None)
                if progress:
                    progress(0, total)
                for chunk in iter(lambda: response.read(DOWNLOAD_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelError(f"could not download {entry.url} ({reason}); check the network "
                             "connection and try again") from None
        except Exception as exc:  # http.client.IncompleteRead and friends: a cut connection
            raise ModelError(f"download of {entry.url} was interrupted ({type(exc).__name__}); "
                             "try again") from None
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise ModelError(f"{entry.url}: checksum mismatch: expected {entry.sha256}, got "
                             f"{actual}; the download may be corrupt, try again")


# ---------------------------------------------------------------- adding

def _refuse_shadowing(source: Path, metadata: dict[str, Any], checksum: str) -> None:
    """A user model answers to its id in place of the bundled one (user models come last):
    refuse a file that would take a bundled model's id and version with other contents."""
    for entry in load_registry():
        if entry.id != metadata["id"] or entry.version != metadata["version"]:
            continue
        if entry.sha256 and entry.sha256 == checksum:
            return  # the very same file: harmless
        if not entry.sha256:
            bundled = resolve_model(entry)
            from SpineSegDiffLib.core.hashing import sha256_file

            if bundled.is_file() and sha256_file(bundled) == checksum:
                return
        raise ModelError(f"{source}: claims to be the bundled model '{entry.id}' version {entry.version} "
                         "but its contents differ; adding it would replace the bundled model: give it "
                         "a new id or version (train --model-id / --model-version) and add it again")


def add_user_model(zip_path: str | os.PathLike) -> ModelEntry:
    """Copy a model file into the cache and list it in the user's registry."""
    from SpineSegDiffLib.core.hashing import sha256_file
    from SpineSegDiffLib.model.metadata import read_checked_weights

    source = Path(zip_path)
    # refuses a broken, altered (weights checksum), non-finite or incompatible file before copying
    metadata, _ = read_checked_weights(source)
    if not _ID.match(str(metadata["id"])):
        raise ModelError(f"{source}: model id '{metadata['id']}' should be lowercase letters, "
                         "digits, '.', '_' or '-'")
    _refuse_shadowing(source, metadata, sha256_file(source))
    destination = cache_dir() / f"{metadata['id']}-{metadata['version']}.zip"
    if source.resolve() != destination.resolve():
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)
    training = metadata.get("training", {})
    entry = ModelEntry(
        id=metadata["id"],
        title=metadata["title"],
        version=metadata["version"],
        url=str(destination.resolve()),
        sha256=sha256_file(destination),
        size_bytes=destination.stat().st_size,
        labels=tuple(item["key"] for item in metadata["labels"]),
        modality=str(metadata.get("modality", "MR")),
        sequences=tuple(str(s) for s in training.get("sequences", ())),
        training_data=str(training.get("data", training.get("summary", "")))[:500],
        license=str(metadata.get("license", "unknown")),
        description=str(metadata.get("description", f"added from {source.name}")),
        source="user",
    )
    # replace an earlier addition of the same id and version, keep everything else
    others = [e for e in load_user_models() if (e.id, e.version) != (entry.id, entry.version)]
    registry = {"schema_version": REGISTRY_SCHEMA_VERSION,
                "models": [e.to_dict() for e in others + [entry]]}
    write_text(user_registry_path(), json.dumps(registry, indent=2) + "\n")
    return entry
