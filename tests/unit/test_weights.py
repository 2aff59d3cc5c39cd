"""Finding, verifying, downloading and loading weights, and building models from them."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model
from torchvision.models._api import Weights, WeightsEnum
from torchvision.transforms._presets import SemanticSegmentation

from app.cli import preflight
from app.config import Settings
from app.errors import ConfigError
from app.predictors import load_predictor
from app.predictors.loading import build_model
from app.predictors.repository import ModelSpec
from app.predictors.weights import (
    CheckpointFile,
    ResolvedWeights,
    TorchvisionWeights,
    Untrained,
    load_state_dict_file,
    locate_torchvision_weights,
    resolve_weights,
    verify_file,
    weights_source,
)


def hashed_file(directory: Path, stem: str, payload: bytes) -> Path:
    """A file named the torch.hub way, ``<stem>-<sha256 prefix>.pth``."""
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    path = directory / f"{stem}-{prefix}.pth"
    path.write_bytes(payload)
    return path


def make_member(url: str) -> WeightsEnum:
    class TestWeights(WeightsEnum):
        V1 = Weights(url=url, transforms=SemanticSegmentation, meta={"categories": ["a", "b"]})

    return TestWeights.V1


def tensor_file_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "tmp.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    return path.read_bytes()


def test_verify_checks_prefix_and_full_digest(tmp_path: Path) -> None:
    path = hashed_file(tmp_path, "x", b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    verify_file(path, hash_prefix=digest[:8], sha256=digest)
    with pytest.raises(ConfigError, match="does not start with 00000000"):
        verify_file(path, hash_prefix="00000000", sha256=None)
    with pytest.raises(ConfigError, match=f"SHA-256 is {digest}"):
        verify_file(path, hash_prefix=None, sha256="ab" * 32)


def test_a_present_file_is_verified_and_used(tmp_path: Path) -> None:
    source = hashed_file(tmp_path, "model", tensor_file_bytes(tmp_path))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    (weights_dir / source.name).write_bytes(source.read_bytes())
    member = make_member(f"https://example.invalid/models/{source.name}")
    assert locate_torchvision_weights(member, weights_dir, allow_download=False, name="m") == (
        weights_dir / source.name
    )
    (weights_dir / source.name).write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="corrupt"):
        locate_torchvision_weights(member, weights_dir, allow_download=False, name="m")


def test_download_goes_into_the_weights_dir_hash_checked(tmp_path: Path) -> None:
    source = hashed_file(tmp_path, "model", tensor_file_bytes(tmp_path))
    member = make_member(source.as_uri())  # torch.hub downloads file:// URLs like any other
    weights_dir = tmp_path / "weights"
    found = locate_torchvision_weights(member, weights_dir, allow_download=True, name="m")
    assert found == weights_dir / source.name
    assert found.read_bytes() == source.read_bytes()
    bad = tmp_path / "model-00000000.pth"
    bad.write_bytes(source.read_bytes())
    with pytest.raises(ConfigError, match="download failed"):
        locate_torchvision_weights(
            make_member(bad.as_uri()), tmp_path / "w2", allow_download=True, name="m"
        )


def test_offline_failure_names_the_file_and_the_remedy(tmp_path: Path) -> None:
    member = make_member("http://127.0.0.1:9/models/deeplab-abcdef12.pth")  # nothing listens
    for allow in (True, False):
        with pytest.raises(ConfigError) as caught:
            locate_torchvision_weights(member, tmp_path, allow_download=allow, name="sem")
        message = str(caught.value)
        assert str(tmp_path / "deeplab-abcdef12.pth") in message
        assert "segserve weights fetch sem" in message
        assert 'weights = "none"' in message


def test_only_tensors_are_loaded(tmp_path: Path) -> None:
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 3}, wrapped)
    assert list(load_state_dict_file(wrapped)) == ["a"]
    code = tmp_path / "code.pth"
    torch.save({"a": torch.ones(1), "evil": Path("/etc/passwd")}, code)
    with pytest.raises(ConfigError, match="not a loadable state_dict"):
        load_state_dict_file(code)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="junk.pth"):
        load_state_dict_file(junk)
    listy = tmp_path / "list.pth"
    torch.save([torch.ones(1)], listy)
    with pytest.raises(ConfigError, match="expected a state_dict"):
        load_state_dict_file(listy)


def lraspp_spec(**fields: object) -> ModelSpec:
    return ModelSpec(
        name="seg", task="semantic", architecture="lraspp_mobilenet_v3_large", **fields
    )  # type: ignore[arg-type]


def test_checkpoint_loads_into_the_architecture(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3
    )
    torch.save(reference.state_dict(), tmp_path / "mine.pth")
    spec = lraspp_spec(checkpoint="mine.pth", categories=["bg", "a", "b"])
    # Unfolded, so that the model's tensors are the checkpoint's own.
    settings = Settings(_env_file=None, weights_dir=tmp_path, device="cpu", fold_batchnorm=False)  # type: ignore[call-arg]
    predictor = load_predictor(spec, settings)
    assert predictor.source == "checkpoint:mine.pth"
    assert predictor.categories == ["bg", "a", "b"]
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(predictor.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_checkpoint_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=5
    )
    torch.save(model.state_dict(), tmp_path / "five.pth")
    spec = lraspp_spec(checkpoint="five.pth", categories=["bg", "a", "b"])
    weights = resolve_weights(spec, tmp_path, allow_download=False)
    with pytest.raises(ConfigError) as caught:
        build_model(spec, weights, seed=0)
    assert "3 categories" in str(caught.value) and "size mismatch" in str(caught.value)
    missing = ResolvedWeights({"x": torch.ones(1)}, ["bg", "a", "b"], "checkpoint:x.pth")
    with pytest.raises(ConfigError, match="Missing key"):
        build_model(spec, missing, seed=0)
    with pytest.raises(ConfigError, match="not found"):
        resolve_weights(
            lraspp_spec(checkpoint="absent.pth", categories=["a"]), tmp_path, allow_download=False
        )


def test_untrained_models_are_reproducible_and_leave_global_rng_alone() -> None:
    spec = lraspp_spec(weights="none")
    weights = resolve_weights(spec, Path("unused"), allow_download=False)
    assert weights.source == "untrained" and weights.categories[0] == "__background__"
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_model(spec, weights, seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)
    second = build_model(spec, weights, seed=7).state_dict()
    other = build_model(spec, weights, seed=8).state_dict()
    name = "classifier.low_classifier.weight"
    assert torch.equal(first[name], second[name])
    assert not torch.equal(first[name], other[name])


@pytest.mark.parametrize(
    ("task", "architecture"),
    [("semantic", "lraspp_mobilenet_v3_large"), ("instance", "maskrcnn_resnet50_fpn_v2")],
)
def test_unknown_builder_options_are_a_config_error(task: str, architecture: str) -> None:
    spec = ModelSpec(
        name="m", task=task, architecture=architecture, weights="none", options={"colour": "red"}
    )  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bad \\[options\\].*colour"):
        build_model(spec, resolve_weights(spec, Path("x"), allow_download=False), seed=0)


@pytest.mark.parametrize("frozen", [True, False])
def test_a_v1_mask_rcnn_checkpoint_keeps_its_batch_norm_kind(tmp_path: Path, frozen: bool) -> None:
    """A checkpoint of a model built with pretrained weights (FrozenBatchNorm2d backbone) is
    rebuilt the same way, so its outputs equal the model that saved it."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.resnet import resnet50
    from torchvision.ops.misc import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d if frozen else torch.nn.BatchNorm2d
    source = MaskRCNN(_resnet_fpn_extractor(resnet50(norm_layer=norm), 3), num_classes=3)
    torch.save(source.state_dict(), tmp_path / "v1.pth")
    spec = ModelSpec(
        name="v1",
        task="instance",
        architecture="maskrcnn_resnet50_fpn",
        checkpoint="v1.pth",
        categories=["bg", "a", "b"],
    )
    model = build_model(spec, resolve_weights(spec, tmp_path, allow_download=False), seed=0)
    assert isinstance(model.backbone.body.bn1, norm)


class _Payload:
    """Unpickling this would run code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def small_checkpoint(path: Path, seed: int = 0) -> str:
    """A real lraspp state_dict at ``path``; returns its SHA-256."""
    torch.manual_seed(seed)
    model = get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3
    )
    torch.save(model.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pinned_checkpoint_loads_only_with_its_exact_digest(tmp_path: Path) -> None:
    digest = small_checkpoint(tmp_path / "mine.pth")
    spec = lraspp_spec(checkpoint="mine.pth", categories=["bg", "a", "b"], sha256=digest.upper())
    assert resolve_weights(spec, tmp_path, allow_download=False).state_dict
    small_checkpoint(tmp_path / "mine.pth", seed=1)  # replaced by other, valid weights
    with pytest.raises(ConfigError) as caught:
        resolve_weights(spec, tmp_path, allow_download=False)
    message = str(caught.value)
    assert "model 'seg'" in message and str(tmp_path / "mine.pth") in message
    assert digest in message and "was changed or replaced" in message


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_file_holding_code_is_refused_without_running_it(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save({"w": torch.ones(1), "x": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    spec = lraspp_spec(checkpoint="evil.pth", categories=["bg", "a", "b"])
    with pytest.raises(ConfigError) as caught:
        resolve_weights(spec, tmp_path, allow_download=False)
    assert str(path) in str(caught.value) and "not a loadable state_dict" in str(caught.value)
    assert not marker.exists()


def test_preflight_stops_on_a_tampered_pinned_file_naming_it(tmp_path: Path) -> None:
    models, weights = tmp_path / "models", tmp_path / "weights"
    models.mkdir()
    weights.mkdir()
    digest = small_checkpoint(weights / "mine.pth")
    (models / "seg.toml").write_text(
        'task = "semantic"\narchitecture = "lraspp_mobilenet_v3_large"\n'
        f'checkpoint = "mine.pth"\nsha256 = "{digest}"\ncategories = ["bg", "a", "b"]\n'
    )
    settings = Settings(_env_file=None, models_dir=models, weights_dir=weights, device="cpu")  # type: ignore[call-arg]
    preflight(settings)  # intact: passes
    with (weights / "mine.pth").open("ab") as f:
        f.write(b"\0")  # one byte appended
    with pytest.raises(ConfigError, match=f"model 'seg': {weights / 'mine.pth'}: SHA-256"):
        preflight(settings)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"sha256": "abc123"}, "String should match pattern"),
        ({"sha256": "g" * 64}, "String should match pattern"),
        ({"weights": "none", "sha256": "a" * 64}, "loads no file"),
    ],
)
def test_a_bad_sha256_in_the_model_file_is_refused(fields: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        lraspp_spec(**fields)


def test_each_kind_of_source_says_where_its_parameters_come_from(tmp_path: Path) -> None:
    untrained = weights_source(lraspp_spec(weights="none"))
    assert isinstance(untrained, Untrained)
    assert untrained.locate(tmp_path, allow_download=True, model="seg") is None
    assert untrained.label == "untrained"
    assert untrained.default_categories()[0] == "__background__"

    checkpoint = weights_source(lraspp_spec(checkpoint="mine.pth", categories=["bg", "x"]))
    assert checkpoint == CheckpointFile("mine.pth", None)
    assert checkpoint.label == "checkpoint:mine.pth"
    assert "MISSING" in checkpoint.describe(tmp_path)
    (tmp_path / "mine.pth").write_bytes(b"")
    assert checkpoint.locate(tmp_path, allow_download=False, model="seg") == tmp_path / "mine.pth"

    published = weights_source(lraspp_spec())
    assert isinstance(published, TorchvisionWeights)
    assert (
        published.label == "torchvision:LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1"
    )
    assert published.path(tmp_path).name.startswith("lraspp_mobilenet_v3_large-")
    assert "missing: run `segserve weights fetch`" in published.describe(tmp_path)
    with pytest.raises(ConfigError, match="segserve weights fetch seg"):
        published.locate(tmp_path, allow_download=False, model="seg")
