"""The offline validators of `make lint-deploy` pass the shipped files and reject broken ones."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kustomize_render
import pytest
import validate_deploy
import yaml

from tests.deploy.conftest import ROOT, load_yaml

# ------------------------------------------------------------------------------ all at once


def test_shipped_files_pass_every_validator() -> None:
    assert validate_deploy.validate_all(ROOT) == []


def test_the_command_fails_on_a_problem(tmp_path: Path) -> None:
    for name in ("Dockerfile", "docker-compose.yml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "k8s").mkdir()  # no kustomization.yaml: cannot render
    assert validate_deploy.main(["--root", str(tmp_path)]) == 1
    assert validate_deploy.main(["--root", str(ROOT)]) == 0


# -------------------------------------------------------------------------------- hadolint


def test_hadolint_rejects_a_root_user_and_an_untagged_base(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM ubuntu\nUSER root\nCMD segserve serve\n")
    problems = "\n".join(validate_deploy.hadolint(dockerfile))
    assert "DL3006" in problems  # FROM without a tag
    assert "DL3002" in problems  # last USER is root
    assert "DL3025" in problems  # shell-form CMD


def test_the_shipped_dockerfile_ignores_only_what_it_says(tmp_path: Path) -> None:
    # Without its inline `hadolint ignore` pragmas the same file has findings: the pragmas,
    # not a lenient hadolint, are what make it pass.
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stripped = "\n".join(line for line in text.splitlines() if "hadolint ignore" not in line)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(stripped)
    problems = "\n".join(validate_deploy.hadolint(dockerfile))
    assert "DL3008" in problems
    assert "SC2086" in problems


# ------------------------------------------------------------------------- compose schema


def _compose_with(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> list[str]:
    document = copy.deepcopy(load_yaml(ROOT / "docker-compose.yml"))
    change(document)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(document))
    return validate_deploy.compose(path)


def _misspelt_healthcheck_key(doc: dict[str, Any]) -> None:
    doc["services"]["segserve"]["healthcheck"]["intervall"] = "10s"


def _ports_not_a_list(doc: dict[str, Any]) -> None:
    doc["services"]["segserve"]["ports"] = 8000


def _unknown_service_key(doc: dict[str, Any]) -> None:
    doc["services"]["segserve-cpu"]["restart_policy"] = "always"


def _gpu_count_not_a_number(doc: dict[str, Any]) -> None:
    devices = doc["services"]["segserve"]["deploy"]["resources"]["reservations"]["devices"]
    devices[0]["count"] = ["one"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (_misspelt_healthcheck_key, "$.services.segserve.healthcheck"),
        (_ports_not_a_list, "$.services.segserve.ports"),
        (_unknown_service_key, "$.services['segserve-cpu']"),
        (_gpu_count_not_a_number, "$.services.segserve.deploy.resources.reservations"),
    ],
)
def test_compose_schema_rejects(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], where: str
) -> None:
    problems = _compose_with(tmp_path, change)
    assert problems, "the broken compose file passed the schema"
    assert any(where in problem for problem in problems), problems


def test_compose_schema_accepts_the_unchanged_file(tmp_path: Path) -> None:
    # The same round trip as the broken cases, changing nothing: only the change fails them.
    assert _compose_with(tmp_path, lambda doc: None) == []


# ------------------------------------------------------------------------ kubernetes schema


def _edit_manifest(k8s: Path, file: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = k8s / file
    document = load_yaml(path)
    change(document)
    path.write_text(yaml.safe_dump(document))


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        (
            "deployment.yaml",
            lambda d: d["spec"].update(revisionHistoryLimitt=5),
            "'revisionHistoryLimitt' was unexpected",
        ),
        (
            "deployment.yaml",
            lambda d: _container(d)["startupProbe"].update(failureThreshold="sixty"),
            "startupProbe.failureThreshold",
        ),
        (
            "deployment.yaml",
            lambda d: _container(d)["securityContext"].update(readOnlyRootFS=True),
            "'readOnlyRootFS' was unexpected",
        ),
        (
            "poddisruptionbudget.yaml",
            lambda d: d.update(apiVersion="policy/v1beta7"),
            "Couldn't find schema",
        ),
        (
            "horizontalpodautoscaler.yaml",
            lambda d: d["spec"].update(minReplicas="two"),
            "spec.minReplicas",
        ),
        ("service.yaml", lambda d: d["spec"]["ports"][0].pop("port"), "'port' is a required"),
    ],
)
def test_kubernetes_schemas_reject(
    k8s_copy: Path, file: str, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    _edit_manifest(k8s_copy, file, change)
    problems = validate_deploy.kubernetes(k8s_copy)
    # Checked against each Kubernetes version the manifests must apply to.
    assert len(problems) == len(validate_deploy.KUBERNETES_VERSIONS), problems
    assert all(expected in problem for problem in problems), problems


def test_kubernetes_schemas_accept_the_unchanged_copy(k8s_copy: Path) -> None:
    _edit_manifest(k8s_copy, "deployment.yaml", lambda doc: None)
    assert validate_deploy.kubernetes(k8s_copy) == []


def test_a_kustomization_field_the_renderer_does_not_handle_is_an_error(k8s_copy: Path) -> None:
    # Skipping `namePrefix` would validate something other than what kubectl applies.
    _edit_manifest(k8s_copy, "kustomization.yaml", lambda d: d.update(namePrefix="x-"))
    [problem] = validate_deploy.kubernetes(k8s_copy)
    assert "does not handle: namePrefix" in problem


def test_generator_files_outside_the_kustomization_are_refused(k8s_copy: Path) -> None:
    # kustomize's load restrictor refuses ../ paths, hence the copy of models/ in deploy/k8s.
    def point_outside(doc: dict[str, Any]) -> None:
        doc["configMapGenerator"][0]["files"][0] = "../../models/deeplabv3_resnet50.toml"

    _edit_manifest(k8s_copy, "kustomization.yaml", point_outside)
    [problem] = validate_deploy.kubernetes(k8s_copy)
    assert "only loads files inside the kustomization's directory" in problem


# ------------------------------------------------------------------------------ renderer


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # kustomize's own test vectors (api/hasher), for a ConfigMap named ""
        ({}, "42745tchd9"),
        ({"one": ""}, "9g67k2htb6"),
        ({"two": "2", "one": "", "three": "3"}, "f5h7t85m9b"),
    ],
)
def test_config_map_suffix_is_kustomizes(data: dict[str, str], expected: str) -> None:
    assert kustomize_render.config_map_hash("", data) == expected


def test_render_generates_the_models_config_map_and_renames_its_reference() -> None:
    manifests = kustomize_render.render(ROOT / "deploy" / "k8s")
    [config_map] = [m for m in manifests if m["kind"] == "ConfigMap"]
    [deployment] = [m for m in manifests if m["kind"] == "Deployment"]
    name = config_map["metadata"]["name"]
    suffix = kustomize_render.config_map_hash("segserve-models", config_map["data"])
    assert name == f"segserve-models-{suffix}"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "configMap": {"name": name}} in volumes
    assert _container(deployment)["image"] == "segserve:cuda"  # from `images:`


@pytest.mark.parametrize(
    ("original", "entry", "expected"),
    [
        ("segserve", {"newTag": "1.0"}, "segserve:1.0"),
        ("segserve:old", {"newName": "reg:5000/team/segserve"}, "reg:5000/team/segserve:old"),
        ("segserve:old", {"digest": "sha256:abc"}, "segserve@sha256:abc"),
        ("other:1", {"newTag": "2"}, "other:1"),  # another image: untouched
    ],
)
def test_images_transformer(original: str, entry: dict[str, str], expected: str) -> None:
    pod = {"containers": [{"name": "c", "image": original}]}
    kustomize_render._set_images(pod, [{"name": "segserve", **entry}])
    assert pod["containers"][0]["image"] == expected


def _rendered_deployment(directory: Path) -> dict[str, Any]:
    [deployment] = [m for m in kustomize_render.render(directory) if m["kind"] == "Deployment"]
    return deployment


def test_the_cpu_overlay_is_the_base_without_the_gpu() -> None:
    base = _rendered_deployment(ROOT / "deploy" / "k8s")
    cpu = _rendered_deployment(ROOT / "deploy" / "k8s" / "overlays" / "cpu")
    container = _container(cpu)
    assert "nvidia.com" not in yaml.safe_dump(cpu)
    assert container["image"] == "segserve:cpu"
    assert {"name": "SEGSERVE_DEVICE", "value": "cpu"} in container["env"]
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"]
    # Everything else comes from the base unchanged: probes, volumes, security.
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "securityContext"):
        assert container[key] == _container(base)[key], key
    assert cpu["spec"]["template"]["spec"]["volumes"] == base["spec"]["template"]["spec"]["volumes"]


def test_a_failed_patch_test_stops_the_render(k8s_copy: Path) -> None:
    # The overlay patches env by index; its `test` op must catch a reordered base.
    def reorder_env(doc: dict[str, Any]) -> None:
        env = _container(doc)["env"]
        env.append(env.pop(0))

    _edit_manifest(k8s_copy, "deployment.yaml", reorder_env)
    problems = validate_deploy.kubernetes(k8s_copy / "overlays" / "cpu")
    assert len(problems) == 1 and "patch test failed" in problems[0], problems


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ({"op": "add", "path": "/a/b", "value": 2}, {"a": {"b": 2, "l": [1, 2]}}),
        ({"op": "add", "path": "/a/l/-", "value": 3}, {"a": {"b": 1, "l": [1, 2, 3]}}),
        ({"op": "add", "path": "/a/l/0", "value": 0}, {"a": {"b": 1, "l": [0, 1, 2]}}),
        ({"op": "remove", "path": "/a/l/0"}, {"a": {"b": 1, "l": [2]}}),
        ({"op": "replace", "path": "/a/b", "value": 5}, {"a": {"b": 5, "l": [1, 2]}}),
        ({"op": "test", "path": "/a/b", "value": 1}, {"a": {"b": 1, "l": [1, 2]}}),
    ],
)
def test_json_patch_operations(operation: dict[str, Any], expected: dict[str, Any]) -> None:
    document = {"a": {"b": 1, "l": [1, 2]}}
    kustomize_render._json_patch(document, operation)
    assert document == expected


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "/a/missing", "value": 1},  # replace needs the location
        {"op": "remove", "path": "/a/l/5"},
        {"op": "test", "path": "/a/b", "value": 2},
        {"op": "move", "path": "/a/b", "from": "/a/l"},
    ],
)
def test_json_patch_refuses(operation: dict[str, Any]) -> None:
    with pytest.raises(kustomize_render.RenderError):
        kustomize_render._json_patch({"a": {"b": 1, "l": [1, 2]}}, operation)
