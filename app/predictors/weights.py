"""Where a model's parameters come from, and its files: find, verify, download, load.

A model's :data:`WeightsSource` is one of three kinds: :class:`Untrained` (seeded random
parameters, no file), :class:`CheckpointFile` (a state_dict in the weights directory) or
:class:`TorchvisionWeights` (a member of the architecture's weights enum). Loading, the
startup preflight, ``segserve weights fetch`` and ``segserve models`` all ask the source.
Nothing but tensors is ever unpickled.

Torchvision weights are looked up in the weights directory under torchvision's own file
names (``deeplabv3_resnet50_coco-cd0a2569.pth``), their SHA-256 checked against the hash prefix
in that name, and downloaded there by torch.hub when missing and the network allows.
Checkpoints are plain state_dict files next to them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision import models as tv_models
from torchvision.models import WeightsEnum

from app.errors import ConfigError
from app.predictors.repository import ModelSpec

log = logging.getLogger(__name__)

# torch.hub's convention: the file name ends in "-<sha256 prefix>.<ext>".
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass(frozen=True)
class ResolvedWeights:
    """A model's parameters, loaded: the state_dict, the categories and where they came from."""

    state_dict: dict[str, torch.Tensor] | None  # None: untrained, seeded
    categories: list[str]
    source: str  # "torchvision:<Enum>.<MEMBER>", "checkpoint:<file>" or "untrained"


def weights_member(architecture: str, member: str = "DEFAULT") -> WeightsEnum:
    """A torchvision weights enum member (``DEFAULT`` resolves to the concrete one)."""
    enum = tv_models.get_model_weights(architecture)
    return enum[member]


def spec_weights(spec: ModelSpec) -> WeightsEnum:
    """The torchvision weights a (non-checkpoint, trained) spec asks for."""
    return weights_member(spec.architecture, spec.weights or "DEFAULT")


def _hash_prefix(path: Path) -> str | None:
    match = _HASH_PREFIX.search(path.name)
    return match.group(1) if match else None


def torchvision_label(member: WeightsEnum) -> str:
    """How /models and the logs name a torchvision weights member."""
    return f"torchvision:{type(member).__name__}.{member.name}"


def weights_file_name(member: WeightsEnum) -> str:
    return Path(urlparse(member.url).path).name


def sha256_of(path: Path) -> str:
    # Startup checks a file in the preflight and again when loading it (twice more with a
    # full `sha256` pin): hash each version of a file once. A rewritten file changes its
    # size or mtime, so a tampered file is still hashed anew.
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, *, hash_prefix: str | None, sha256: str | None) -> None:
    """Raise ConfigError unless the file's SHA-256 matches the prefix and/or full digest."""
    if hash_prefix is None and sha256 is None:
        return
    actual = sha256_of(path)
    if hash_prefix is not None and not actual.startswith(hash_prefix):
        raise ConfigError(
            f"{path}: SHA-256 {actual[:16]}... does not start with {hash_prefix}, the hash in "
            "its file name: the file is corrupt or not the published weights; delete it and "
            "fetch it again"
        )
    if sha256 is not None and actual != sha256.lower():
        raise ConfigError(
            f"{path}: SHA-256 is {actual}, but the model file's `sha256` is {sha256.lower()}: "
            "the file was changed or replaced; restore the file the digest was taken from"
        )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with ``weights_only=True``: a file holding code or non-tensors is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"{path}: not a loadable state_dict ({type(exc).__name__}: {exc})"
        ) from None
    # Training scripts often wrap the weights: {"model": state_dict} / {"state_dict": ...}.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ConfigError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return dict(obj)


def fetch_torchvision_weights(member: WeightsEnum, weights_dir: Path) -> Path:
    """Download ``member`` into ``weights_dir`` (hash-checked by torch.hub); return its path."""
    target = weights_dir / weights_file_name(member)
    weights_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", member.url, target)
    torch.hub.download_url_to_file(
        member.url, str(target), hash_prefix=_hash_prefix(target), progress=False
    )
    return target


def locate_torchvision_weights(
    member: WeightsEnum, weights_dir: Path, *, allow_download: bool, name: str
) -> Path:
    """The verified local file for ``member``, downloading it when missing and allowed."""
    target = weights_dir / weights_file_name(member)
    if target.is_file():
        verify_file(target, hash_prefix=_hash_prefix(target), sha256=None)
        return target
    how_to = (
        f"put {target.name} at {target} (download it from {member.url}, or run "
        f"`segserve weights fetch {name}` on a machine with network access and copy the "
        f'weights directory), or set weights = "none" in the model file for an untrained model'
    )
    if not allow_download:
        raise ConfigError(f"model {name!r}: weights file {target} is missing; {how_to}")
    try:
        return fetch_torchvision_weights(member, weights_dir)
    except Exception as exc:
        raise ConfigError(
            f"model {name!r}: weights file {target} is missing and the download failed "
            f"({type(exc).__name__}: {exc}); {how_to}"
        ) from None


def _verified(path: Path, sha256: str | None, model: str) -> Path:
    try:
        verify_file(path, hash_prefix=None, sha256=sha256)
    except ConfigError as exc:
        raise ConfigError(f"model {model!r}: {exc}") from None
    return path


@dataclass(frozen=True)
class Untrained:
    """Seeded random parameters (``weights = "none"``): no file, the default categories."""

    architecture: str
    label = "untrained"

    def locate(self, weights_dir: Path, *, allow_download: bool, model: str) -> Path | None:
        return None

    def default_categories(self) -> list[str]:
        return list(weights_member(self.architecture).meta["categories"])

    def describe(self, weights_dir: Path) -> str:
        return "untrained (seeded)"


@dataclass(frozen=True)
class CheckpointFile:
    """A state_dict file, relative to the weights directory, optionally pinned by SHA-256."""

    file: str
    sha256: str | None = None

    @property
    def label(self) -> str:
        return f"checkpoint:{Path(self.file).name}"

    def locate(self, weights_dir: Path, *, allow_download: bool, model: str) -> Path:
        path = weights_dir / self.file
        if not path.is_file():
            raise ConfigError(
                f"model {model!r}: checkpoint {path} not found (checkpoint = "
                f"{self.file!r} is relative to the weights directory {weights_dir})"
            )
        return _verified(path, self.sha256, model)

    def default_categories(self) -> None:
        return None  # a checkpoint's model file must list them (the spec's validator says so)

    def describe(self, weights_dir: Path) -> str:
        path = weights_dir / self.file
        return f"checkpoint {path} ({'present' if path.is_file() else 'MISSING'})"


@dataclass(frozen=True)
class TorchvisionWeights:
    """A member of the architecture's torchvision weights enum, stored under torch.hub's name."""

    member: WeightsEnum
    sha256: str | None = None

    @property
    def label(self) -> str:
        return torchvision_label(self.member)

    def path(self, weights_dir: Path) -> Path:
        return weights_dir / weights_file_name(self.member)

    def locate(self, weights_dir: Path, *, allow_download: bool, model: str) -> Path:
        path = locate_torchvision_weights(
            self.member, weights_dir, allow_download=allow_download, name=model
        )
        return _verified(path, self.sha256, model)

    def default_categories(self) -> list[str]:
        return list(self.member.meta["categories"])

    def describe(self, weights_dir: Path) -> str:
        path = self.path(weights_dir)
        state = "present" if path.is_file() else "missing: run `segserve weights fetch`"
        return f"{self.label} at {path} ({state})"


WeightsSource = Untrained | CheckpointFile | TorchvisionWeights


def weights_source(spec: ModelSpec) -> WeightsSource:
    """Where ``spec``'s parameters come from (the model file's `weights` or `checkpoint`)."""
    if spec.untrained:
        return Untrained(spec.architecture)
    if spec.checkpoint is not None:
        return CheckpointFile(spec.checkpoint, spec.sha256)
    return TorchvisionWeights(spec_weights(spec), spec.sha256)


def model_file(spec: ModelSpec, weights_dir: Path, *, allow_download: bool) -> Path | None:
    """The verified file ``spec`` loads (None for an untrained model); ConfigError names it.

    Checked: torchvision's hash prefix in the file name, and the full ``sha256`` of the model
    file when it gives one, so a tampered file stops startup before anything is unpickled.
    """
    return weights_source(spec).locate(weights_dir, allow_download=allow_download, model=spec.name)


def resolve_weights(spec: ModelSpec, weights_dir: Path, *, allow_download: bool) -> ResolvedWeights:
    """Where ``spec``'s parameters come from, loaded as a CPU state_dict."""
    source = weights_source(spec)
    path = source.locate(weights_dir, allow_download=allow_download, model=spec.name)
    categories = spec.categories or source.default_categories()
    assert categories is not None  # a checkpoint's spec lists them (its validator requires it)
    state = None if path is None else load_state_dict_file(path)
    return ResolvedWeights(state, categories, source.label)
