"""Find, verify, download and load weights; never unpickle anything but tensors.

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


def weights_source(member: WeightsEnum) -> str:
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


def model_file(spec: ModelSpec, weights_dir: Path, *, allow_download: bool) -> Path | None:
    """The verified file ``spec`` loads (None for an untrained model); ConfigError names it.

    Checked: torchvision's hash prefix in the file name, and the full ``sha256`` of the model
    file when it gives one, so a tampered file stops startup before anything is unpickled.
    """
    if spec.untrained:
        return None
    if spec.checkpoint is not None:
        path = weights_dir / spec.checkpoint
        if not path.is_file():
            raise ConfigError(
                f"model {spec.name!r}: checkpoint {path} not found (checkpoint = "
                f"{spec.checkpoint!r} is relative to the weights directory {weights_dir})"
            )
    else:
        path = locate_torchvision_weights(
            spec_weights(spec), weights_dir, allow_download=allow_download, name=spec.name
        )
    try:
        verify_file(path, hash_prefix=None, sha256=spec.sha256)
    except ConfigError as exc:
        raise ConfigError(f"model {spec.name!r}: {exc}") from None
    return path


def resolve_weights(spec: ModelSpec, weights_dir: Path, *, allow_download: bool) -> ResolvedWeights:
    """Where ``spec``'s parameters come from, loaded as a CPU state_dict."""
    path = model_file(spec, weights_dir, allow_download=allow_download)
    if path is None:
        default = weights_member(spec.architecture)
        return ResolvedWeights(
            None, spec.categories or list(default.meta["categories"]), "untrained"
        )
    if spec.checkpoint is not None:
        assert spec.categories is not None  # the spec's validator requires them
        return ResolvedWeights(
            load_state_dict_file(path), spec.categories, f"checkpoint:{path.name}"
        )
    member = spec_weights(spec)
    categories = spec.categories or list(member.meta["categories"])
    return ResolvedWeights(load_state_dict_file(path), categories, weights_source(member))
