"""models/*.toml parsing and validation: errors name the file, the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.predictors.repository import load_repository, load_spec

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_the_shipped_repository() -> None:
    specs = {s.name: s for s in load_repository(REPO_MODELS)}
    assert {
        "deeplabv3_resnet50",
        "deeplabv3_mobilenet_v3_large",
        "fcn_resnet50",
        "maskrcnn_resnet50_fpn_v2",
        "maskrcnn_resnet50_fpn",
    } <= set(specs)
    defaults = {s.task: s.name for s in specs.values() if s.default}
    assert defaults == {"semantic": "deeplabv3_resnet50", "instance": "maskrcnn_resnet50_fpn_v2"}
    assert all(s.weights == "DEFAULT" for s in specs.values())


def test_a_full_spec(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mine",
        """
task = "instance"
architecture = "maskrcnn_resnet50_fpn"
checkpoint = "mine.pth"
categories = ["__background__", "widget"]
default = true
[batching]
max_batch_size = 2
max_wait_ms = 10
[options]
min_size = 320
""",
    )
    spec = load_spec(path)
    assert spec.name == "mine"
    assert spec.checkpoint == "mine.pth" and spec.weights is None
    assert spec.batching.max_batch_size == 2 and spec.batching.max_wait_ms == 10
    assert spec.options == {"min_size": 320}
    assert not spec.untrained


def test_weights_default_and_none(tmp_path: Path) -> None:
    implicit = load_spec(write(tmp_path, "a", 'task = "semantic"\narchitecture = "fcn_resnet50"\n'))
    assert implicit.weights == "DEFAULT" and not implicit.untrained
    none = load_spec(
        write(tmp_path, "b", 'task = "semantic"\narchitecture = "fcn_resnet50"\nweights = "none"\n')
    )
    assert none.untrained


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            'task = "semantic"\narchitecture = "resnet50"\n',
            ["architecture", "'resnet50'", "deeplabv3_resnet50"],
        ),
        ('task = "panoptic"\narchitecture = "fcn_resnet50"\n', ["task", "'panoptic'"]),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\nweights = "IMAGENET"\n',
            ["'IMAGENET'", "COCO_WITH_VOC_LABELS_V1"],
        ),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\ncolour = 1\n',
            ["colour", "1", "Extra inputs"],
        ),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\n[batching]\nmax_batch_size = 0\n',
            ["batching.max_batch_size", "0"],
        ),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\ncheckpoint = "x.pth"\n',
            ["categories", "required"],
        ),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\ncheckpoint = "x.pth"\nweights = "DEFAULT"\ncategories = ["a"]\n',
            ["either"],
        ),
        (
            'task = "instance"\narchitecture = "fcn_resnet50"\n',
            ["instance builder", "maskrcnn_resnet50_fpn"],
        ),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\n[options]\nnum_classes = 3\n',
            ["num_classes"],
        ),
        ('task = "semantic"\nname = "x"\narchitecture = "fcn_resnet50"\n', ["name", "stem"]),
        ('task = "semantic\n', ["TOML"]),
        ('architecture = "fcn_resnet50"\n', ["task: required, missing"]),
        (
            'task = "semantic"\narchitecture = "fcn_resnet50"\ndefault = "yes"\n',
            ["default = 'yes'", "boolean"],
        ),
    ],
)
def test_errors_name_the_file_key_and_value(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, "broken", text)
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_one_default_per_task(tmp_path: Path) -> None:
    for name in ("b", "a"):
        write(
            tmp_path, name, 'task = "semantic"\narchitecture = "fcn_resnet50"\nweights = "none"\n'
        )
    specs = load_repository(tmp_path)
    assert [s.name for s in specs if s.default] == ["a"]  # none marked: the first by file name
    write(tmp_path, "a", 'task = "semantic"\narchitecture = "fcn_resnet50"\ndefault = true\n')
    write(tmp_path, "b", 'task = "semantic"\narchitecture = "fcn_resnet50"\ndefault = true\n')
    with pytest.raises(ConfigError, match="more than one semantic"):
        load_repository(tmp_path)


def test_missing_or_empty_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\*.toml"):
        load_repository(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        load_repository(tmp_path / "absent")


def test_preprocessing_resize_is_the_short_side_the_predictor_resizes_to(tmp_path: Path) -> None:
    import torch

    from app.predictors.preprocessing import model_preprocess, resize_of
    from app.predictors.semantic import SemanticPredictor
    from app.predictors.weights import ResolvedWeights

    text = 'task = "semantic"\narchitecture = "lraspp_mobilenet_v3_large"\nweights = "none"\n'
    plain = load_spec(write(tmp_path, "plain", text))
    mine = load_spec(write(tmp_path, "mine", text + "[preprocessing]\nresize = 128\n"))
    assert (resize_of(plain), resize_of(mine)) == (520, 128)
    preset = model_preprocess(plain)
    custom = model_preprocess(mine)
    assert (custom.mean, custom.std) == (preset.mean, preset.std)
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2)
    weights = ResolvedWeights(None, ["a", "b"], "untrained")
    predictor = SemanticPredictor(mine, model.eval(), weights, torch.device("cpu"))
    assert predictor.network_shape(300, 600) == (128, 256)
    assert predictor.describe()["resize"] == 128
    image = torch.randint(0, 256, (3, 300, 600), dtype=torch.uint8)
    assert predictor.preprocess(image).shape == (3, 128, 256)


@pytest.mark.parametrize(
    ("task", "arch", "table", "message"),
    [
        ("instance", "maskrcnn_resnet50_fpn", "resize = 512", "min_size and max_size"),
        ("semantic", "fcn_resnet50", "resize = 8", "greater than or equal to 16"),
        ("semantic", "fcn_resnet50", "size = 300", "preprocessing.size"),
    ],
)
def test_bad_preprocessing_is_refused(
    tmp_path: Path, task: str, arch: str, table: str, message: str
) -> None:
    text = f'task = "{task}"\narchitecture = "{arch}"\n[preprocessing]\n{table}\n'
    with pytest.raises(ConfigError, match=message):
        load_spec(write(tmp_path, "bad", text))
