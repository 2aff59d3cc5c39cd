"""Render a kustomization the way ``kubectl kustomize`` would, for what deploy/k8s uses.

kustomize is not installable from the package registries CI reaches, so CI renders the base
with this instead. It handles exactly: ``resources`` (YAML files in the kustomization's
directory, or other kustomization directories such as a base), ``configMapGenerator`` with
``files`` (name suffixed with kustomize's content hash, references in pod specs renamed),
``patches`` given inline as JSON 6902 operations on a ``target`` kind and name, and
``images`` (``newName`` / ``newTag`` / ``digest``). Any other kustomization field is an error,
not silently skipped, so the rendered output is never a partial picture of what
``kubectl apply -k`` would apply.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

Manifest = dict[str, Any]

HANDLED_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "images"}
HANDLED_GENERATOR_FIELDS = {"name", "files"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class RenderError(Exception):
    """The kustomization cannot be rendered (or not by this subset of kustomize)."""


def render(directory: Path) -> list[Manifest]:
    """Every manifest ``kubectl kustomize directory`` would print, as dicts."""
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(kustomization) - HANDLED_FIELDS)
    if unknown:
        raise RenderError(f"{path}: fields this renderer does not handle: {', '.join(unknown)}")
    manifests = []
    for resource in kustomization.get("resources", []):
        if (directory / resource).is_dir():  # a base: rendered first, like kustomize
            manifests += render((directory / resource).resolve())
            continue
        text = _inside(directory, resource).read_text(encoding="utf-8")
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    renames = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _config_map(directory, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        manifests.append(config_map)
    for patch in kustomization.get("patches", []):
        _apply_patch(manifests, patch)
    for manifest in manifests:
        if manifest.get("kind") in POD_TEMPLATE_KINDS:
            pod = manifest["spec"]["template"]["spec"]
            _rename_config_maps(pod, renames)
            _set_images(pod, kustomization.get("images", []))
    return manifests


def _inside(directory: Path, name: str) -> Path:
    """``directory / name``, refusing what kustomize's load restrictor refuses."""
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        raise RenderError(
            f"{name}: kustomize only loads files inside the kustomization's directory "
            f"({directory}); copy the file there"
        )
    path = directory / name
    if not path.is_file():
        raise RenderError(f"{path}: no such file")
    return path


def _config_map(directory: Path, generator: dict[str, Any]) -> Manifest:
    unknown = sorted(set(generator) - HANDLED_GENERATOR_FIELDS)
    if unknown:
        raise RenderError(f"configMapGenerator {generator.get('name')}: unhandled {unknown}")
    data = {}
    for entry in generator.get("files", []):
        key, _, name = entry.rpartition("=")
        path = _inside(directory, name)
        data[key or path.name] = path.read_text(encoding="utf-8")
    name = f"{generator['name']}-{config_map_hash(generator['name'], data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def config_map_hash(name: str, data: dict[str, str]) -> str:
    """kustomize's name suffix: the SHA-256 of Go's JSON of {kind, name, data}, 10 hex
    digits with 0, 1, 3, a and e swapped for letters so that no word can form."""
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": name},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoding/json escapes these for HTML safety; the hash is over Go's bytes.
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        encoded = encoded.replace(char, escape)
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _apply_patch(manifests: list[Manifest], patch: dict[str, Any]) -> None:
    if set(patch) != {"target", "patch"} or set(patch["target"]) - {"kind", "name"}:
        raise RenderError(f"patches: only inline patches on a target kind/name: {patch}")
    target = patch["target"]
    matches = [
        m
        for m in manifests
        if m.get("kind") == target.get("kind", m.get("kind"))
        and m["metadata"]["name"] == target.get("name", m["metadata"]["name"])
    ]
    if not matches:
        raise RenderError(f"patches: no resource matches the target {target}")
    operations = yaml.safe_load(patch["patch"])
    for manifest in matches:
        for operation in operations:
            _json_patch(manifest, operation)


def _json_patch(document: Manifest, operation: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, remove, replace, test), in place."""
    op, path = operation["op"], operation["path"]
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    node: Any = document
    try:
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
        if op == "test":
            if node[key] != operation["value"]:
                raise RenderError(f"patch test failed at {path}: {node[key]!r}")
        elif op == "remove":
            del node[key]
        elif op == "replace":
            _ = node[key]  # replace, unlike add, requires the location to exist
            node[key] = operation["value"]
        elif op == "add" and isinstance(node, list):
            node.insert(key, operation["value"])
        elif op == "add":
            node[key] = operation["value"]
        else:
            raise RenderError(f"patch operation {op!r} is not handled")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise RenderError(f"patch {op} {path}: no such location ({exc!r})") from None


def _rename_config_maps(pod: Manifest, renames: dict[str, str]) -> None:
    for volume in pod.get("volumes", []):
        ref = volume.get("configMap")
        if ref and ref.get("name") in renames:
            ref["name"] = renames[ref["name"]]
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]


def _set_images(pod: Manifest, images: list[dict[str, str]]) -> None:
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name, suffix = _split_image(container["image"])
        for image in images:
            if image["name"] != name:
                continue
            if "digest" in image:
                suffix = "@" + image["digest"]
            elif "newTag" in image:
                suffix = ":" + image["newTag"]
            container["image"] = image.get("newName", name) + suffix


def _split_image(reference: str) -> tuple[str, str]:
    """``registry:5000/repo:tag`` -> (``registry:5000/repo``, ``:tag``); digests likewise."""
    if "@" in reference:
        name, digest = reference.split("@", 1)
        return name, "@" + digest
    head, _, last = reference.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return f"{head}/{last}" if head else last, ":" + tag
    return reference, ""
