"""deploy/kubernetes, checked offline: rendered by a real kustomize (kubectl's), every object validated against the
Kubernetes schemas (kubernetes-validate, strict: unknown fields fail) and the KEDA objects against KEDA's CRD
schemas (KEDA 2.10.1's, compiled by @kubernetes-models/keda 0.4.2, run by node); every variable a manifest gives
the service is a setting it reads; and the scaling, shutdown and probe settings agree with each other and with the
code. scripts/bootstrap.sh installs the tools under .devstack/k8s-tools."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from config.celery_config import WORKER_QUEUES
from config.settings import Settings
from core.platforms import Platform

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
TOOLS = ROOT / ".devstack" / "k8s-tools"
KUBERNETES_VERSION = "1.33.0"  # native sidecars (restartPolicy on an init container) need 1.29
KEDA_API = "keda.sh/v1alpha1"
SERVICE_IMAGE = "registry.example.com/platform/imagebuilder:0.1.0"  # the example overlay's
# Read by docker-py's from_env (worker/engine.py) and by the docker CLI the BuildKit builder runs
DOCKER_CLIENT_VARIABLES = frozenset({"DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"})
ARCHITECTURES = {"amd64": Platform.LINUX_AMD64, "arm64": Platform.LINUX_ARM64}  # a worker Deployment each


def kustomize(folder: Path) -> list[dict]:
    done = subprocess.run([str(TOOLS / "kubectl"), "kustomize", str(folder)], capture_output=True, text=True,
                          check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def example() -> list[dict]:
    return kustomize(DEPLOY / "overlays" / "example")


def named(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def keda_errors(objects: list[dict]) -> list[str | None]:
    done = subprocess.run(["node", str(Path(__file__).with_name("keda_validate.cjs"))], input=json.dumps(objects),
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "NODE_PATH": str(TOOLS / "node_modules")})
    return json.loads(done.stdout)


def service_containers(objects: list[dict]) -> list[dict]:
    """The containers that run the service's own image, in every workload."""
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    return [c for pod in pods for c in pod["containers"] if c["image"] == SERVICE_IMAGE]


@pytest.mark.parametrize("folder", ["base", "overlays/example", "overlays/sentinel"])
def test_every_object_is_valid_kubernetes_with_no_unknown_field(folder):
    # Given the base and the example overlay, rendered by kustomize
    objects = kustomize(DEPLOY / folder)
    core = [o for o in objects if o["apiVersion"] != KEDA_API]
    # Then each core object validates against the Kubernetes schemas, unknown fields refused
    for o in core:
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
    assert {o["kind"] for o in core} >= {"ConfigMap", "Service", "StatefulSet", "Deployment",
                                          "PodDisruptionBudget", "NetworkPolicy"}


def test_the_schema_check_would_catch_a_misspelt_field_or_a_wrong_type(example):
    worker = copy.deepcopy(named(example, "Deployment", "imagebuilder-worker-amd64"))
    worker["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 660
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(named(example, "ScaledObject", "imagebuilder-worker-amd64"))
    scaled["spec"]["minReplicaCount"] = "zero"
    assert keda_errors([scaled]) == ["data/spec/minReplicaCount must be integer"]


def test_the_keda_objects_are_valid_against_kedas_crd_schemas(example):
    keda = [o for o in example if o["apiVersion"] == KEDA_API]
    assert sorted(o["kind"] for o in keda) == ["ScaledObject", "ScaledObject", "TriggerAuthentication"]
    assert keda_errors(keda) == [None, None, None]


@pytest.mark.parametrize("overlay", ["example", "sentinel"])
def test_every_variable_a_manifest_gives_the_service_is_a_setting_it_reads(overlay):
    # Given the names of every variable set on the service's containers, directly or from the settings ConfigMap
    objects = kustomize(DEPLOY / "overlays" / overlay)
    settings_map = named(objects, "ConfigMap", "imagebuilder-settings")["data"]
    given = {env["name"] for c in service_containers(objects) for env in c.get("env", [])} | set(settings_map)
    # Then each is a Settings variable, or one the Docker client reads
    read = {field.validation_alias for field in Settings.model_fields.values()} | DOCKER_CLIENT_VARIABLES
    assert given - read == set()
    assert {"IMAGEBUILDER_REDIS_URL", "IMAGEBUILDER_API_TOKENS", "DOCKER_HOST"} <= given


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_workers_scale_from_zero_on_the_queues_they_serve_by_their_concurrency(example, arch):
    # Given one architecture's worker Deployment and its ScaledObject
    name = f"imagebuilder-worker-{arch}"
    scaled = named(example, "ScaledObject", name)
    triggers = scaled["spec"]["triggers"]
    worker = named(example, "Deployment", name)["spec"]["template"]["spec"]
    args = worker["containers"][0]["args"]
    concurrency = args[args.index("--concurrency") + 1]
    env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    # Then its pods run on that architecture's nodes, build its platform, and scale on every queue they serve
    platform = ARCHITECTURES[arch]
    assert worker["nodeSelector"] == {"kubernetes.io/arch": arch} and env["IMAGEBUILDER_PLATFORMS"] == platform.value
    assert scaled["spec"]["scaleTargetRef"]["name"] == name
    assert scaled["spec"]["minReplicaCount"] == 0
    assert [t["metadata"]["listName"] for t in triggers] == [*WORKER_QUEUES, platform.queue]
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["activationListLength"] == "0"  # active at one queued message
        assert trigger["metadata"]["listLength"] == concurrency
        auth = named(example, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "imagebuilder-redis",
                                                    "key": "password"}]


def test_each_architectures_workers_select_only_their_own_pods(example):
    selectors = [named(example, kind, f"imagebuilder-worker-{arch}")["spec"]["selector"]["matchLabels"]
                 for kind in ("Deployment", "PodDisruptionBudget") for arch in sorted(ARCHITECTURES)]
    assert [selector["imagebuilder.io/arch"] for selector in selectors] == ["amd64", "arm64"] * 2


def test_a_worker_pod_talks_tls_to_its_own_engine_and_outlasts_its_soft_shutdown(example):
    settings_map = named(example, "ConfigMap", "imagebuilder-settings")["data"]
    pod = named(example, "Deployment", "imagebuilder-worker-amd64")["spec"]["template"]["spec"]
    (engine,), (worker,) = pod["initContainers"], pod["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    # A native sidecar engine with TLS certificates in a volume both mount; no host socket anywhere
    assert engine["restartPolicy"] == "Always" and engine["image"].endswith("-dind")
    assert {"name": "DOCKER_TLS_CERTDIR", "value": "/certs"} in engine["env"]
    assert env["DOCKER_HOST"] == "tcp://localhost:2376" and env["DOCKER_TLS_VERIFY"] == "1"
    assert env["DOCKER_CERT_PATH"] == "/certs/client"
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    # The grace period outlasts the soft shutdown, and a disruption budget covers the workers
    assert pod["terminationGracePeriodSeconds"] > float(settings_map["IMAGEBUILDER_SOFT_SHUTDOWN_S"])
    budget = named(example, "PodDisruptionBudget", "imagebuilder-worker-amd64")
    assert budget["spec"]["selector"]["matchLabels"].items() <= \
        named(example, "Deployment", "imagebuilder-worker-amd64")["spec"]["template"]["metadata"]["labels"].items()


def test_pull_secrets_are_dockerconfigjson_secrets_mounted_under_the_pull_secrets_dir(example):
    settings_map = named(example, "ConfigMap", "imagebuilder-settings")["data"]
    pod = named(example, "Deployment", "imagebuilder-worker-arm64")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert mounts
    for mount in mounts:
        secret = named(example, "Secret", volumes[mount["name"]]["secret"]["secretName"])
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert Path(mount["mountPath"]).parent == Path(settings_map["IMAGEBUILDER_PULL_SECRETS_DIR"])


def test_the_api_is_ready_on_readyz_beat_runs_twice_and_redis_keeps_an_aof_behind_a_password(example):
    api = named(example, "Deployment", "imagebuilder-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert named(example, "Deployment", "imagebuilder-beat")["spec"]["replicas"] == 2
    redis = named(example, "StatefulSet", "imagebuilder-redis")["spec"]
    args = " ".join(redis["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args and "--requirepass $(REDIS_PASSWORD)" in args
    assert redis["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_only_the_services_own_pods_and_kedas_reach_redis(example):
    policy = named(example, "NetworkPolicy", "imagebuilder-redis")["spec"]
    (rule,) = policy["ingress"]
    pods, keda = rule["from"]
    assert pods["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["api", "worker", "beat"]}]
    assert keda == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    components = {o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
                  for o in example if o["kind"] in ("Deployment", "StatefulSet")}
    assert components == {"api", "worker", "beat", "redis", "package-cache"}  # the caches: not among those let in


def test_no_secret_value_is_in_a_configmap_or_a_command_line(example):
    texts = [json.dumps(o) for o in example if o["kind"] == "ConfigMap"]
    texts += [json.dumps(c.get("args", [])) for c in service_containers(example)]
    assert not [t for t in texts if re.search(r"CHANGE-ME|PASSWORD=|TOKENS=", t)]


def test_the_ingress_streams_live_logs_and_the_api_trusts_its_forwarded_headers(example):
    # The live log (server-sent events) passes unbuffered, and no quiet stretch shorter than a build cuts it
    settings_map = named(example, "ConfigMap", "imagebuilder-settings")["data"]
    annotations = named(example, "Ingress", "imagebuilder-api")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= \
        int(settings_map["IMAGEBUILDER_BUILD_TIMEOUT_S"])
    # The API believes X-Forwarded-* from a network the settings accept, and not from every address
    api = named(example, "Deployment", "imagebuilder-api")["spec"]["template"]["spec"]["containers"][0]
    (trusted,) = [e["value"] for e in api["env"] if e["name"] == "IMAGEBUILDER_TRUSTED_PROXIES"]
    proxies = Settings(_env_file=None, IMAGEBUILDER_TRUSTED_PROXIES=trusted).trusted_proxies
    assert proxies and not {"0.0.0.0/0", "::/0"} & set(proxies)


def test_the_workers_go_through_package_caches_on_bounded_volumes_that_only_workers_reach(example):
    # Given the settings and the package caches' objects
    settings_map = named(example, "ConfigMap", "imagebuilder-settings")["data"]
    # Then the workers are pointed at each cache's Service, by name and port
    for setting, service in (("IMAGEBUILDER_APT_PROXY", "imagebuilder-apt-cache"),
                             ("IMAGEBUILDER_PIP_MIRROR", "imagebuilder-pip-cache")):
        port = named(example, "Service", service)["spec"]["ports"][0]["port"]
        assert settings_map[setting].startswith(f"http://{service}:{port}/") or settings_map[setting] == \
            f"http://{service}:{port}", settings_map[setting]
    # And each cache keeps its files on a claim larger than the bound it is told to keep them under
    bounds = {"imagebuilder-apt-cache": ("APT_CACHE_MAX", 20 << 30), "imagebuilder-pip-cache": ("PROXPI_CACHE_SIZE",
                                                                                               10 << 30)}
    for name, (variable, bound) in bounds.items():
        (container,) = named(example, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        value = {env["name"]: env["value"] for env in container["env"]}[variable]
        assert _bytes(value) == bound and container["image"].startswith(f"registry.example.com/platform/{name}:")
        claim = named(example, "PersistentVolumeClaim", name)["spec"]["resources"]["requests"]["storage"]
        assert _bytes(claim) > bound
    # And only worker pods reach them
    policy = named(example, "NetworkPolicy", "imagebuilder-package-cache")["spec"]
    assert policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}}}]


def _bytes(size: str) -> int:
    units = {"G": 1 << 30, "Gi": 1 << 30, "M": 1 << 20, "Mi": 1 << 20}
    for suffix in sorted(units, key=len, reverse=True):
        if size.endswith(suffix):
            return int(size.removesuffix(suffix)) * units[suffix]
    return int(size)


@pytest.fixture(scope="module")
def sentinel() -> list[dict]:
    return kustomize(DEPLOY / "overlays" / "sentinel")


def test_the_sentinel_overlay_runs_three_redis_pods_each_with_a_sentinel_and_no_single_redis(sentinel):
    # Given the sentinel overlay
    redis = named(sentinel, "StatefulSet", "imagebuilder-redis-ha")["spec"]
    # Then three pods run a Redis and a sentinel each, started by scripts that put passwords in files, not arguments
    assert redis["replicas"] == 3 and redis["serviceName"] == "imagebuilder-redis-ha"
    containers = redis["template"]["spec"]["containers"]
    assert [(c["name"], c["command"]) for c in containers] == [("redis", ["sh", "/scripts/redis.sh"]),
                                                                ("sentinel", ["sh", "/scripts/sentinel.sh"])]
    scripts = named(sentinel, "ConfigMap", "imagebuilder-redis-scripts")["data"]
    assert "sentinel monitor imagebuilder $master 6379 2" in scripts["sentinel.sh"]
    assert "replicaof $master 6379" in scripts["redis.sh"] and "> /conf/redis.conf" in scripts["redis.sh"]
    # and the one-pod Redis and its Service are gone
    assert [o["metadata"]["name"] for o in sentinel if o["metadata"]["name"] == "imagebuilder-redis"
            and o["kind"] in ("StatefulSet", "Service")] == []
    assert keda_errors([o for o in sentinel if o["apiVersion"] == KEDA_API]) == [None, None, None]


def test_every_component_and_keda_find_the_master_through_the_same_three_sentinels(sentinel):
    # Given the pods' addresses under their headless Service, in the overlay's namespace
    namespace = named(sentinel, "ConfigMap", "imagebuilder-settings")["metadata"]["namespace"]
    pods = [f"imagebuilder-redis-ha-{n}.imagebuilder-redis-ha.{namespace}:26379" for n in range(3)]
    settings_map = named(sentinel, "ConfigMap", "imagebuilder-settings")["data"]
    # Then the settings name them, the master and one replica to confirm each accepted build, and they are valid
    settings = Settings(_env_file=None, **settings_map)
    assert settings.redis_target.sentinels == tuple((pod.rsplit(":")[0], 26379) for pod in pods)
    assert (settings.redis_master_name, settings.redis_wait_replicas) == ("imagebuilder", 1)
    # and every service container has the sentinels' password from the Secret
    for container in service_containers(sentinel):
        given = {env["name"]: env for env in container["env"]}
        assert given["IMAGEBUILDER_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "imagebuilder-redis", "key": "sentinel-password"}
    # and KEDA reads the queues from the same master through the same sentinels, with both passwords
    for scaled in (o for o in sentinel if o["kind"] == "ScaledObject"):
        assert {(t["type"], t["metadata"]["addresses"], t["metadata"]["sentinelMaster"])
                for t in scaled["spec"]["triggers"]} == {("redis-sentinel", ",".join(pods), "imagebuilder")}
    auth = named(sentinel, "TriggerAuthentication", "imagebuilder-redis")["spec"]["secretTargetRef"]
    assert {ref["parameter"] for ref in auth} == {"password", "sentinelPassword"}


def test_the_sentinel_ports_are_open_to_the_services_pods_and_the_redis_pods_to_each_other(sentinel):
    policy = named(sentinel, "NetworkPolicy", "imagebuilder-redis")["spec"]
    service_rule, peers = policy["ingress"]
    assert {p["port"] for p in service_rule["ports"]} == {6379, 26379}
    assert peers["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "imagebuilder-redis"}}}]
    assert {p["port"] for p in peers["ports"]} == {6379, 26379}
    texts = [json.dumps(c.get("command", [])) + json.dumps(c.get("args", []))
             for o in sentinel if o["kind"] == "StatefulSet" for c in o["spec"]["template"]["spec"]["containers"]]
    assert not [t for t in texts if "CHANGE-ME" in t or "PASSWORD" in t]
