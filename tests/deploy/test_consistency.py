"""The Dockerfile, compose file and Kubernetes manifests agree with each other and the app.

Nothing here can be built or run on CI (no Docker, no cluster), so what would only show up
at deploy time is pinned here: ports, health paths, grace periods, paths inside the image,
setting names, the user id, and the model repository copy.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import PurePosixPath
from typing import Any

import kustomize_render
import pytest

from app.api.health import router as health_router
from app.config import Settings
from tests.deploy.conftest import ROOT, dockerfile_text, image_env, load_yaml, runtime_stage

DEFAULTS = Settings.model_fields


def _default(field: str) -> Any:
    return DEFAULTS[field].default


def _instructions(keyword: str) -> list[str]:
    """Arguments of every Dockerfile instruction ``keyword`` (continuations joined)."""
    pattern = rf"^{keyword}\s+(.*)$"
    return [m.group(1).strip() for m in re.finditer(pattern, dockerfile_text(), re.MULTILINE)]


def _workdir() -> PurePosixPath:
    [workdir] = re.findall(r"^WORKDIR\s+(\S+)$", runtime_stage(), re.MULTILINE)
    return PurePosixPath(workdir)


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return document


def _manifests() -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in kustomize_render.render(ROOT / "deploy" / "k8s")}


def _pod() -> dict[str, Any]:
    pod: dict[str, Any] = _manifests()["Deployment"]["spec"]["template"]["spec"]
    return pod


def _container() -> dict[str, Any]:
    [container] = _pod()["containers"]
    return container


def _seconds(duration: str) -> float:
    """A compose duration such as ``40s`` or ``1m30s``."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"unexpected duration {duration!r}"
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


# ------------------------------------------------------------------------- port and health


def test_one_port_everywhere() -> None:
    port = _default("port")
    assert _instructions("EXPOSE") == [str(port)]
    assert image_env()["SEGSERVE_PORT"] == str(port)
    for name, service in _compose()["services"].items():
        assert service["ports"] == [f"{port}:{port}"], name
    [container_port] = _container()["ports"]
    assert container_port == {"name": "http", "containerPort": port, "protocol": "TCP"}
    env = {e["name"]: e.get("value") for e in _container()["env"]}
    assert env["SEGSERVE_PORT"] == str(port)
    assert _manifests()["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_health_paths_are_the_apps_liveness_and_readiness_routes() -> None:
    routes = {route.path: route.name for route in health_router.routes}  # type: ignore[attr-defined]
    live, ready = "/healthz", "/readyz"
    assert routes[live] == "live" and routes[ready] == "ready"

    [healthcheck] = _instructions("HEALTHCHECK")
    assert healthcheck.endswith(f'CMD ["python", "/usr/local/bin/segserve-healthcheck", "{live}"]')
    for name, service in _compose()["services"].items():
        assert service["healthcheck"]["test"][-2:] == ["/usr/local/bin/segserve-healthcheck", live]
        assert service["healthcheck"]["test"][:2] == ["CMD", "python"], name

    container = _container()
    # Liveness and startup must not depend on the models: they load in the background, and a
    # pod restarted for being slow to load would never get there.
    assert container["startupProbe"]["httpGet"] == {"path": live, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": live, "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}


def test_the_healthcheck_script_is_copied_where_the_probes_call_it() -> None:
    copies = [args.split() for args in _instructions("COPY")]
    assert ["deploy/healthcheck.py", "/usr/local/bin/segserve-healthcheck"] in copies


# ------------------------------------------------------------------------------ shutdown


def test_grace_periods_outlast_the_services_drain() -> None:
    grace = _default("shutdown_grace_s")
    for name, service in _compose()["services"].items():
        assert service["stop_signal"] == "SIGTERM"
        # Docker's SIGKILL must come after the drain, with time to exit.
        assert _seconds(service["stop_grace_period"]) >= grace + 5, name

    pod = _pod()
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # Kubernetes counts the preStop hook inside terminationGracePeriodSeconds.
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + grace + 5


def test_one_worker_in_exec_form() -> None:
    # Exec form: segserve is PID 1 and gets SIGTERM itself (a shell would swallow it).
    assert _instructions("CMD")[-1] == '["segserve", "serve"]'
    assert "--workers" not in dockerfile_text()
    assert "OMP_NUM_THREADS" not in dockerfile_text()  # torch_threads=0 reads the CPU quota


# ------------------------------------------------------------------------------ settings


def _setting_names(text: str) -> set[str]:
    return set(re.findall(r"\bSEGSERVE_[A-Z0-9_]+\b", text))


@pytest.mark.parametrize(
    "file",
    [
        "Dockerfile",
        "docker-compose.yml",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/overlays/cpu/kustomization.yaml",
        "deploy/healthcheck.py",
    ],
)
def test_every_segserve_variable_is_a_setting(file: str) -> None:
    known = {f"SEGSERVE_{name.upper()}" for name in DEFAULTS}
    used = _setting_names((ROOT / file).read_text(encoding="utf-8"))
    assert used, f"{file} names no setting; the check would pass vacuously"
    assert used <= known, f"{file}: not settings: {sorted(used - known)}"


def test_compose_and_kubernetes_values_are_valid_settings() -> None:
    environments = [service["environment"] for service in _compose()["services"].values()]
    environments.append({e["name"]: e["value"] for e in _container()["env"] if "value" in e})
    for environment in environments:
        fields = {
            key.removeprefix("SEGSERVE_").lower(): value for key, value in environment.items()
        }
        Settings.model_validate(fields)  # raises on a value the service would refuse at boot


# ------------------------------------------------------------------------- image layout


def test_mounts_land_on_the_default_directories_inside_the_image() -> None:
    workdir = _workdir()
    models = str(workdir / _default("models_dir"))
    weights = str(workdir / _default("weights_dir"))
    env = image_env()
    assert "SEGSERVE_MODELS_DIR" not in env and "SEGSERVE_WEIGHTS_DIR" not in env
    for service in _compose()["services"].values():
        targets = {volume["target"]: volume for volume in service["volumes"]}
        assert targets[models]["source"] == "./models" and targets[models]["read_only"]
        assert targets[weights]["source"] == "./weights" and targets[weights]["read_only"]
    mounts = {m["name"]: m for m in _container()["volumeMounts"]}
    assert mounts["models"]["mountPath"] == models and mounts["models"]["readOnly"]


def test_read_only_root_with_a_writable_tmp() -> None:
    env = image_env()
    for variable in ("HOME", "XDG_CACHE_HOME", "TORCH_HOME", "CUDA_CACHE_PATH", "MPLCONFIGDIR"):
        assert env[variable].startswith("/tmp"), variable
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for service in _compose()["services"].values():
        assert service["read_only"] is True
        assert any(entry.split(":")[0] == "/tmp" for entry in service["tmpfs"])
    container = _container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    [volume] = [v for v in _pod()["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume


def test_the_same_non_root_user_in_the_image_and_the_pod() -> None:
    [user] = re.findall(r"^USER\s+(\S+)$", runtime_stage(), re.MULTILINE)
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0 and gid != 0
    security = _pod()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)


def test_the_image_installs_torch_as_the_makefile_does() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    [make_spec] = re.findall(r"^TORCH_SPEC\s*\?=\s*(.+)$", makefile, re.MULTILINE)
    [arg] = [a for a in _instructions("ARG") if a.startswith("TORCH_SPEC=")]
    assert shlex.split(arg.removeprefix("TORCH_SPEC=")) == [make_spec.strip()]
    assert "pip install $TORCH_PIP_ARGS $TORCH_SPEC" in dockerfile_text()


def _dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            included = negated
    return included


def test_everything_the_build_reads_is_in_the_context() -> None:
    sources = [args.split()[0] for args in _instructions("COPY") if not args.startswith("--from")]
    sources += re.findall(r"--mount=type=bind,source=(\S+?),", dockerfile_text())
    assert {"pyproject.toml", "README.md", "app", "models", "weights"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert _dockerignore_allows(source), f".dockerignore leaves out {source}"
    for secret in (".env", ".venv/bin/python", ".git/config", "tests/fakes.py"):
        assert not _dockerignore_allows(secret), secret


# ---------------------------------------------------------------------------- kubernetes


def test_the_config_map_holds_the_model_repository() -> None:
    [config_map] = [
        m for m in kustomize_render.render(ROOT / "deploy" / "k8s") if m["kind"] == "ConfigMap"
    ]
    repository = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "models").glob("*.toml")}
    assert config_map["data"] == repository, (
        "deploy/k8s/models/ differs from models/: copy models/*.toml there and list each "
        "file under configMapGenerator in deploy/k8s/kustomization.yaml"
    )


def test_selectors_and_targets_find_the_deployment() -> None:
    manifests = _manifests()
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # A PDB that allows one pod down leaves one serving only if there are at least two.
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_each_pod_gets_a_gpu_and_the_cpu_request_the_hpa_scales_on() -> None:
    resources = _container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert "cpu" in resources["requests"]  # utilisation is a fraction of the request
    env = {e["name"]: e.get("value") for e in _container()["env"]}
    assert env["SEGSERVE_DEVICE"] == "cuda"


def test_compose_reserves_a_gpu_only_for_the_gpu_service() -> None:
    services = _compose()["services"]
    [device] = services["segserve"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "profiles" not in services["segserve"]
    cpu = services["segserve-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["build"]["args"]["VARIANT"] == "cpu"
    assert cpu["environment"]["SEGSERVE_DEVICE"] == "cpu"
