"""The Kubernetes manifests and the container recipe, validated offline against real schemas."""

import copy
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, shared_data

sys.path.insert(0, os.path.join(REPO, "k8s"))
import validate  # noqa: E402  (k8s/validate.py)

# kubectl kustomize of five kustomizations and the schema checks of what they build: the full suite (slow).
# The edit loop runs the Dockerfile checks, which need neither.


@pytest.fixture(scope="module")
def crds():
    return validate.crd_validators(shared_data("k8s", "kuberay-v1.7.0"))


@pytest.fixture(scope="module")
def built():
    return {k: validate.build(k) for k in validate.KUSTOMIZATIONS}


def _kinds(docs):
    return sorted(d["kind"] for d in docs)


@pytest.mark.slow
def test_every_overlay_builds_and_validates(built, crds):
    for k, docs in built.items():
        assert validate.validate_docs(docs, crds) == [], k
    assert _kinds(built["k8s/overlays/gpu-cloud"]) == [
        "ConfigMap", "ConfigMap", "CronJob", "Job", "RayCluster", "RayJob", "RayService", "Role", "RoleBinding",
        "ServiceAccount"]
    # RayCronJob replaces the CronJob and everything only it needed; TF Serving replaces the RayService
    assert _kinds(built["k8s/overlays/raycronjob"]) == ["ConfigMap", "Job", "RayCluster", "RayCronJob", "RayJob",
                                                       "RayService"]
    assert _kinds(built["k8s/overlays/tf-serving"]) == [
        "ConfigMap", "ConfigMap", "ConfigMap", "CronJob", "Deployment", "Job", "RayCluster", "RayJob", "Role", "RoleBinding",
        "Service", "ServiceAccount"]
    assert {"Deployment", "Service"} <= set(_kinds(built["k8s/overlays/local"]))
    # the preprocess Job submits to a Flink session cluster whose TaskManagers carry a Beam worker pool
    flink = {(d["kind"], d["metadata"]["name"]): d for d in built["k8s/overlays/flink"]}
    tm = flink[("Deployment", "flink-taskmanager")]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in tm] == ["taskmanager", "beam-worker-pool"]
    job = flink[("Job", "srgan-preprocess")]["spec"]["template"]["spec"]
    assert "--environment_type=EXTERNAL" in job["containers"][0]["args"]
    assert job["initContainers"][0]["restartPolicy"] == "Always"
    assert all(d["metadata"]["namespace"] == "srgan" for d in built["k8s/overlays/gpu-cloud"])


@pytest.mark.slow
def test_the_script_runs_clean(crds):
    out = subprocess.run([sys.executable, os.path.join(REPO, "k8s", "validate.py"), "--crd-dir",
                          shared_data("k8s", "kuberay-v1.7.0")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "64 objects in 6 kustomizations: valid" in out.stdout


def _one(docs, kind):
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind))


def _template(docs):
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("srgan-retrain-template"))
    return yaml.safe_load(cm["data"]["rayjob.yaml"])


@pytest.mark.slow
def test_what_the_manifests_promise(built):
    docs = built["k8s/overlays/gpu-cloud"]
    job = _one(docs, "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["activeDeadlineSeconds"] > 0
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in worker["volumes"])  # /dev/shm
    assert worker["containers"][0]["image"] == "registry.example.com/ml/srgan-pipeline:0.1.0"
    assert job["spec"]["entrypoint"].startswith("python jobs/train.py --artifact-root $ARTIFACT_ROOT")
    cron = _one(docs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert _template(docs)["spec"]["entrypoint"].startswith("python jobs/pipeline.py")
    role = _one(docs, "Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]}]
    settings = next(d for d in docs if d["metadata"]["name"] == "srgan-settings")
    assert settings["data"]["ARTIFACT_ROOT"].startswith("s3://")
    assert not [d for d in docs if d["kind"] == "Secret"]
    local = built["k8s/overlays/local"]
    assert "--gpus-per-worker 0" in _one(local, "RayJob")["spec"]["entrypoint"]
    assert next(d for d in local if d["metadata"]["name"] == "srgan-settings")["data"]["AWS_ENDPOINT_URL"] == \
        "http://seaweedfs:8333"


def _broken(built, mutate, kind="RayJob"):
    docs = copy.deepcopy(built["k8s/overlays/gpu-cloud"])
    target = next(d for d in docs if d["kind"] == kind)
    mutate(target)
    return docs


@pytest.mark.slow
@pytest.mark.parametrize("kind,mutate,expected", [
    ("RayJob", lambda d: d["spec"].__setitem__("shutdownAfterJobFinish", True), "shutdownAfterJobFinish"),
    ("RayJob", lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("replicas", "two"),
     "'two' is not of type 'integer'"),
    ("RayJob", lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"].pop("template"), "'template' is a required property"),
    ("RayCluster", lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("groupname", "x"), "groupname"),
    ("Job", lambda d: d["spec"].__setitem__("backofLimit", 2), "backofLimit"),
    ("CronJob", lambda d: d["spec"].__setitem__("schedule", 5), "5 is not of type 'string'"),
    ("RayJob", lambda d: d["spec"].__setitem__("entrypoint", d["spec"]["entrypoint"] + " --num-wokers 2"),
     "unrecognized arguments: --num-wokers"),
    ("RayJob", lambda d: d["spec"].__setitem__("entrypoint", "python jobs/trian.py --x 1"), "jobs/trian.py, which does not exist"),
    ("RayJob", lambda d: d["spec"].__setitem__("entrypoint", "python jobs/train.py --global-batch-size many"),
     "invalid int value: 'many'"),
    ("Job", lambda d: d["spec"]["template"]["spec"]["containers"][0]["args"].append("--no_such_beam_flag=1"),
     "unknown flag --no_such_beam_flag"),
    ("Job", lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "plaintext"}), "plaintext credential"),
    ("Job", lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("resources"), "resources.requests needs"),
    ("CronJob", lambda d: d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].__setitem__(
        "image", "bitnami/kubectl"), "is not pinned by tag"),
])
def test_broken_copies_are_caught(built, crds, kind, mutate, expected):
    errors = validate.validate_docs(_broken(built, mutate, kind), crds)
    assert errors and any(expected in e for e in errors), errors


@pytest.mark.slow
def test_broken_template_inside_a_configmap_is_caught(built, crds):
    docs = copy.deepcopy(built["k8s/overlays/gpu-cloud"])
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("srgan-retrain-template"))
    template = yaml.safe_load(cm["data"]["rayjob.yaml"])
    template["spec"]["entrypoint"] += " --pretrain-stepz 3"
    template["spec"]["rayClusterSpec"]["rayVersoin"] = "2.60.0"
    cm["data"]["rayjob.yaml"] = yaml.safe_dump(template)
    errors = validate.validate_docs(docs, crds)
    assert any("srgan-retrain-template" in e and "rayVersoin" in e for e in errors), errors
    assert any("srgan-retrain-template" in e and "--pretrain-stepz" in e for e in errors), errors


@pytest.mark.slow
def test_all_project_pods_use_one_image(built, crds):
    template = _template(built["k8s/overlays/gpu-cloud"])
    worker = template["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["image"] == "registry.example.com/ml/srgan-pipeline:0.1.0"
    assert worker["tolerations"][0]["key"] == "nvidia.com/gpu"
    docs = copy.deepcopy(built["k8s/overlays/gpu-cloud"])
    _one_job = next(d for d in docs if d["kind"] == "Job")
    _one_job["spec"]["template"]["spec"]["containers"][0]["image"] = "srgan-pipeline:0.0.9"
    errors = validate.validate_docs(docs, crds)
    assert any("use different images" in e and "srgan-pipeline:0.0.9" in e for e in errors), errors


@pytest.mark.slow
def test_a_secret_with_data_is_refused(built, crds):
    docs = copy.deepcopy(built["k8s/base"]) + [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leak"}, "stringData": {"k": "v"}}]
    assert any("credentials must not be committed" in e for e in validate.validate_docs(docs, crds))


def test_dockerfile_static_checks(tmp_path):
    assert validate.dockerfile_errors() == []
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nCOPY nothing_here/ x/\nRUN pip install tensorflow\n")
    errors = validate.dockerfile_errors(str(bad))
    assert any("not pinned by tag" in e for e in errors)
    assert any("COPY source nothing_here/ does not exist" in e for e in errors)
    assert any("-c constraints.txt" in e for e in errors)


# ----------------------------------------------------------------------------- serving and RayCronJob

def _serve_config(doc):
    return yaml.safe_load(doc["spec"]["serveConfigV2"])


def _set_serve_config(doc, mutate):
    cfg = _serve_config(doc)
    mutate(cfg["applications"][0])
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(cfg)


@pytest.mark.slow
def test_what_the_serving_manifests_promise(built):
    docs = built["k8s/overlays/gpu-cloud"]
    service = _one(docs, "RayService")
    app = _serve_config(service)["applications"][0]
    assert app["import_path"] == "components.serving.app:build_app" and app["route_prefix"] == "/"
    assert app["args"]["model_uri"] == "$ARTIFACT_ROOT/models/srgan-x4" and app["args"]["num_replicas"] == 2
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "registry.example.com/ml/srgan-pipeline:0.1.0"
    assert {"configMapRef": {"name": "srgan-settings"}} in head["envFrom"]  # where $ARTIFACT_ROOT comes from
    cron = _one(built["k8s/overlays/raycronjob"], "RayCronJob")
    assert cron["spec"]["schedule"] == _one(docs, "CronJob")["spec"]["schedule"]
    assert cron["spec"]["jobTemplate"]["entrypoint"] == _template(docs)["spec"]["entrypoint"]
    worker = cron["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["image"] == "registry.example.com/ml/srgan-pipeline:0.1.0"
    tfs = _one(built["k8s/overlays/tf-serving"], "Deployment")["spec"]["template"]["spec"]
    server, sidecar = tfs["containers"]
    assert "--model_config_file=/etc/tf-serving/models.config" in server["args"]
    assert server["image"] == "tensorflow/serving:2.19.1"
    assert sidecar["command"][:3] == ["python", "jobs/pull_model.py", "--watch"]
    assert sidecar["command"][sidecar["command"].index("--output") + 1] == "/models/srgan-x4"
    assert {m["name"] for m in sidecar["volumeMounts"]} == {"models"}
    assert {m["name"] for m in server["volumeMounts"]} == {"models", "model-config"}
    # TF Serving's version policy keeps as many versions as the sidecar leaves in the folder it reads
    models = next(d for d in built["k8s/overlays/tf-serving"] if d["metadata"]["name"] == "srgan-tf-serving-models")
    policy = models["data"]["models.config"]
    assert 'base_path: "/models/srgan-x4"' in policy and 'name: "srgan-x4"' in policy
    keep = sidecar["command"][sidecar["command"].index("--keep-local-versions") + 1]
    assert f"model_version_policy {{ latest {{ num_versions: {keep} }} }}" in policy


def _broken_in(built, overlay, kind, mutate):
    docs = copy.deepcopy(built[overlay])
    mutate(next(d for d in docs if d["kind"] == kind))
    return docs


@pytest.mark.slow
@pytest.mark.parametrize("overlay,kind,mutate,expected", [
    ("k8s/overlays/gpu-cloud", "RayService",
     lambda d: _set_serve_config(d, lambda a: a.__setitem__("import_pth", a.pop("import_path"))),
     "unknown key 'import_pth'"),
    ("k8s/overlays/gpu-cloud", "RayService",
     lambda d: _set_serve_config(d, lambda a: a["args"].__setitem__("replicas", 3)),
     "unknown serve application argument 'replicas'"),
    ("k8s/overlays/gpu-cloud", "RayService",
     lambda d: _set_serve_config(d, lambda a: a["args"].__setitem__("poll_seconds", "often")),
     "'poll_seconds' must be a number"),
    ("k8s/overlays/gpu-cloud", "RayService",
     lambda d: _set_serve_config(d, lambda a: a.__setitem__("route_prefix", "/sr")), "route_prefix must be /"),
    ("k8s/overlays/gpu-cloud", "RayService",
     lambda d: _set_serve_config(d, lambda a: a.__setitem__("import_path", "components.serving.ap:build_app")),
     "No module named 'components.serving.ap'"),
    ("k8s/overlays/gpu-cloud", "RayService",
     lambda d: _set_serve_config(d, lambda a: a.__setitem__("deployments", [{"name": "x", "num_replica": 2}])),
     "unknown key 'num_replica'"),
    ("k8s/overlays/gpu-cloud", "RayService", lambda d: d["spec"].__setitem__("serveConfigV2", "applications: 3"),
     "serveConfigV2: 1 validation error"),
    ("k8s/overlays/gpu-cloud", "RayService", lambda d: d["spec"].__setitem__("serveConfig", "x"), "serveConfig"),
    ("k8s/overlays/raycronjob", "RayCronJob",
     lambda d: d["spec"]["jobTemplate"].__setitem__("entrypoint", d["spec"]["jobTemplate"]["entrypoint"] + " --gan-stepz 2"),
     "unknown flag --gan-stepz"),
    ("k8s/overlays/raycronjob", "RayCronJob", lambda d: d["spec"].__setitem__("schedule", "weekly"),
     "not a five-field cron schedule"),
    ("k8s/overlays/raycronjob", "RayCronJob", lambda d: d["spec"]["jobTemplate"].__setitem__("shutdownAfterJobFinish", 1),
     "shutdownAfterJobFinish"),
    ("k8s/overlays/raycronjob", "RayCronJob", lambda d: d["spec"].__setitem__("concurrencyPolicy", "Forbid"),
     "concurrencyPolicy"),  # RayCronJob has none: the base keeps the CronJob for it
    ("k8s/overlays/tf-serving", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][1]["command"].append("--watchh"),
     "unrecognized arguments: --watchh"),
    ("k8s/overlays/tf-serving", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "tensorflow/serving"),
     "is not pinned by tag"),
    ("k8s/overlays/tf-serving", "Deployment", lambda d: d["spec"].__setitem__("replica", 2), "replica"),
])
def test_broken_serving_manifests_are_caught(built, crds, overlay, kind, mutate, expected):
    errors = validate.validate_docs(_broken_in(built, overlay, kind, mutate), crds)
    assert errors and any(expected in e for e in errors), errors
