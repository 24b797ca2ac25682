"""Validate what `kubectl apply -k` would send, offline.

    python k8s/validate.py                      # base + every overlay, and the Dockerfile
    python k8s/validate.py k8s/overlays/local   # one kustomization

Checks, per object `kubectl kustomize` builds:
- built-in kinds: strict schema validation for Kubernetes KUBE_VERSION (kubernetes-validate);
- RayJob / RayCluster / RayService / RayCronJob: the KubeRay CRD's openAPIV3Schema, strict (unknown
  fields are errors);
- RayJobs inside ConfigMaps (templates a CronJob creates from) are checked the same way;
- every RayJob entrypoint, RayCronJob jobTemplate entrypoint and container command that runs
  `jobs/<script>.py`: the script exists and its own argument parser accepts the flags (Beam's options
  for the Beam jobs); a RayCronJob's schedule has the five cron fields;
- a RayService's serveConfigV2: parsed with Ray Serve's own schema (ServeDeploySchema, unknown keys are
  errors), every import_path imports, and this project's application builder accepts its args;
- no plaintext credentials, resource requests and limits on every container, images pinned by tag.
Exit status 1 and one line per problem when anything fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUBE_VERSION = "1.32"
CRD_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "k8s", "kuberay-v1.7.0")
KUSTOMIZATIONS = ["k8s/base", "k8s/overlays/local", "k8s/overlays/gpu-cloud", "k8s/overlays/raycronjob",
                  "k8s/overlays/tf-serving", "k8s/overlays/flink"]
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.I)
ENV_REF = re.compile(r"\$\((\w+)\)|\$\{(\w+)\}|\$(\w+)")
BEAM_SCRIPTS = {"preprocess.py", "pipeline.py"}  # flags they do not define go to Beam
# libyaml's parser for every document read here: the CRDs are 4 MB of YAML, ~4x faster than the pure-Python one
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def build(kustomization: str) -> list[dict]:
    try:
        out = subprocess.run(["kubectl", "kustomize", os.path.join(REPO, kustomization)],
                             capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise RuntimeError("kubectl is not installed (it builds the kustomizations)") from None
    if out.returncode != 0:
        raise RuntimeError(f"{kustomization}: kubectl kustomize failed: {out.stderr.strip()}")
    return [d for d in yaml.load_all(out.stdout, Loader=SAFE_LOADER) if d]


# ----------------------------------------------------------------------------- schemas

def _strict(schema):
    """A CRD structural schema as JSON Schema with unknown fields forbidden (unless the CRD preserves them)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    # `properties` maps names to schemas (a property may be called "type"): walked once, below
    s = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "properties"}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in s:
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        s["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    if (s.get("type") == "object" and "properties" in s and "additionalProperties" not in s
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        s["additionalProperties"] = False
    return s


def crd_validators(crd_dir: str = CRD_DIR) -> dict:
    """{(apiVersion, kind): jsonschema validator} from KubeRay's CRDs."""
    import jsonschema

    out = {}
    for name in sorted(os.listdir(crd_dir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(crd_dir, name)) as f:
            crds = list(yaml.load_all(f, Loader=SAFE_LOADER))
        for crd in crds:
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by the API server
                out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    if not out:
        raise RuntimeError(f"no CRDs found in {crd_dir}")
    return out


def _name(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name') or meta.get('generateName') or '?'}"


def schema_errors(doc: dict, crds: dict) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in crds:
        return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in sorted(crds[key].iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in getattr(exc, "path", []) or [])
        return [f"{path or '<root>'}: {str(exc).splitlines()[0]}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]} in Kubernetes {KUBE_VERSION}"]
    return []


# ----------------------------------------------------------------------------- commands

def _load_job(script: str):
    spec = importlib.util.spec_from_file_location(f"_job_{os.path.basename(script)[:-3]}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command_errors(argv: list[str]) -> list[str]:
    """A `python jobs/<x>.py ...` command: the script exists and accepts the flags."""
    scripts = [i for i, a in enumerate(argv) if re.fullmatch(r"(\./)?jobs/\w+\.py", a)]
    if not scripts:
        return []
    i = scripts[0]
    script = os.path.join(REPO, argv[i])
    if not os.path.isfile(script):
        return [f"runs {argv[i]}, which does not exist"]
    args = [ENV_REF.sub(lambda m: "placeholder-" + next(g for g in m.groups() if g), a) for a in argv[i + 1:]]
    module = _load_job(script)
    if not hasattr(module, "build_parser"):
        return [f"{argv[i]} has no build_parser()"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            known, unknown = module.build_parser().parse_known_args(args)
    except SystemExit:
        return [f"{argv[i]} rejects its flags: {err.getvalue().strip().splitlines()[-1]}"]
    if getattr(known, "config", None):  # a config file baked into the image: it must exist and load
        from components import config
        path = os.path.join(REPO, known.config)
        if not os.path.isfile(path):
            return [f"{argv[i]}: --config {known.config} does not exist in the repository (the image's /app)"]
        try:
            config.load(path)
        except config.ConfigError as exc:
            return [f"{argv[i]}: --config {known.config}: {exc}"]
    if unknown and os.path.basename(script) in BEAM_SCRIPTS:
        from components.preprocess.beam import PreprocessError, _pipeline_options
        try:
            _pipeline_options(unknown)
        except PreprocessError as exc:
            return [f"{argv[i]}: {exc}"]
    elif unknown:
        return [f"{argv[i]} rejects its flags: unrecognized arguments: {' '.join(unknown)}"]
    return []


# ----------------------------------------------------------------------------- Ray Serve

def _unknown_keys(data, model, where: str) -> list[str]:
    """Keys a pydantic model does not define (Ray Serve's schema ignores them; a typo would be lost)."""
    if not isinstance(data, dict):
        return []
    fields = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return [f"{where}: unknown key {k!r}" for k in data if k not in fields]


def serve_config_errors(text: str) -> list[str]:
    """A RayService's serveConfigV2, checked the way Ray Serve will read it, and its builders' args."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema, DeploymentSchema

    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        return [f"serveConfigV2 is not YAML: {exc}"]
    errors = _unknown_keys(data, ServeDeploySchema, "serveConfigV2")
    apps = data.get("applications") if isinstance(data, dict) else None
    for i, app in enumerate(apps if isinstance(apps, list) else []):  # else the schema says what is wrong
        errors += _unknown_keys(app, ServeApplicationSchema, f"serveConfigV2.applications[{i}]")
        deployments = app.get("deployments") if isinstance(app, dict) else None
        for j, dep in enumerate(deployments if isinstance(deployments, list) else []):
            errors += _unknown_keys(dep, DeploymentSchema, f"serveConfigV2.applications[{i}].deployments[{j}]")
    try:
        schema = ServeDeploySchema.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError: one line per problem
        return errors + [f"serveConfigV2: {' '.join(str(exc).split())}"]
    for app in schema.applications:
        module_name, _, attr = app.import_path.rpartition(":" if ":" in app.import_path else ".")
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            errors.append(f"serveConfigV2: application {app.name}: import_path {app.import_path}: {exc}")
            continue
        if app.import_path == "components.serving.app:build_app":
            from components.config import ConfigError
            if app.route_prefix != "/":
                errors.append(f"serveConfigV2: application {app.name}: route_prefix must be / (the app owns its routes)")
            args = {k: ENV_REF.sub(lambda m: "placeholder-" + next(g for g in m.groups() if g), v)
                    if isinstance(v, str) else v for k, v in (app.args or {}).items()}
            try:
                builder(args)
            except ConfigError as exc:
                errors.append(f"serveConfigV2: application {app.name}: args: {exc}")
    return errors


# ----------------------------------------------------------------------------- pod checks

def _pod_specs(node, path=""):
    """Every dict with a `containers` list (pod specs in any template), with its path."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield path, node
        for k, v in node.items():
            yield from _pod_specs(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _pod_specs(v, f"{path}[{i}]")


def pod_errors(doc: dict) -> list[str]:
    errors = []
    for path, pod in _pod_specs(doc):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            where = f"{path}.containers[{c.get('name')}]"
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1].split(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if "@sha256:" not in image and (not tag or tag == "latest"):
                errors.append(f"{where}: image {image!r} is not pinned by tag")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not all(k in (res.get(part) or {}) for k in ("cpu", "memory")):
                    errors.append(f"{where}: resources.{part} needs cpu and memory")
            for env in c.get("env", []) or []:
                if SECRET_NAME.search(env.get("name", "")) and "value" in env:
                    errors.append(f"{where}: env {env['name']} is a plaintext credential; use valueFrom.secretKeyRef")
            command = (c.get("command") or []) + (c.get("args") or [])
            errors += [f"{where}: {e}" for e in command_errors([str(a) for a in command])]
    if doc.get("kind") == "RayJob":
        errors += [f"spec.entrypoint: {e}" for e in command_errors(shlex.split(doc["spec"].get("entrypoint", "")))]
    if doc.get("kind") == "RayCronJob":
        template = doc["spec"].get("jobTemplate") or {}
        errors += [f"spec.jobTemplate.entrypoint: {e}"
                   for e in command_errors(shlex.split(template.get("entrypoint", "")))]
        if not template.get("entrypoint"):
            errors.append("spec.jobTemplate.entrypoint: missing (a RayCronJob's job runs it)")
        if len(str(doc["spec"].get("schedule", "")).split()) != 5:
            errors.append(f"spec.schedule: {doc['spec'].get('schedule')!r} is not a five-field cron schedule")
    if doc.get("kind") == "RayService" and doc["spec"].get("serveConfigV2") is not None:
        errors += [f"spec.{e}" for e in serve_config_errors(doc["spec"]["serveConfigV2"])]
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        errors.append("a Secret with data in the manifests: credentials must not be committed")
    return errors


def embedded_docs(doc: dict) -> list[tuple[str, dict]]:
    """RayJob/RayCluster templates held in ConfigMaps (what a CronJob creates objects from)."""
    out = []
    if doc.get("kind") == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            try:
                inner = yaml.load(text, Loader=SAFE_LOADER)
            except yaml.YAMLError:
                continue
            if isinstance(inner, dict) and inner.get("kind") in ("RayJob", "RayCluster"):
                out.append((f"{_name(doc)}[{key}]", inner))
    return out


def image_errors(labelled: list[tuple[str, dict]]) -> list[str]:
    """Every container that runs this project's code uses one image: kustomize rewrites `image:` fields
    but not images inside ConfigMap templates, which would silently run another build."""
    seen: dict[str, list[str]] = {}
    for label, doc in labelled:
        for _path, pod in _pod_specs(doc):
            for c in pod.get("containers", []):
                if "srgan-pipeline" in c.get("image", ""):
                    seen.setdefault(c["image"], []).append(label)
    if len(seen) > 1:
        return ["the project's containers use different images: "
                + "; ".join(f"{image} in {', '.join(sorted(set(labels)))}" for image, labels in sorted(seen.items()))]
    return []


def validate_docs(docs: list[dict], crds: dict) -> list[str]:
    errors, labelled = [], []
    for doc in docs:
        for label, d in [(_name(doc), doc)] + embedded_docs(doc):
            labelled.append((label, d))
            errors += [f"{label}: {e}" for e in schema_errors(d, crds) + pod_errors(d)]
    return errors + image_errors(labelled)


# ----------------------------------------------------------------------------- Dockerfile

def dockerfile_errors(path: str = os.path.join(REPO, "Dockerfile")) -> list[str]:
    errors, text = [], open(path).read()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]
    if not froms:
        errors.append("Dockerfile: no FROM")
    for image in froms:
        tag = image.split(":", 1)[1] if ":" in image else ""
        if not tag or tag == "latest":
            errors.append(f"Dockerfile: base image {image!r} is not pinned by tag")
        elif not image.startswith("rayproject/ray:") or "py311" not in tag or "gpu" not in tag:
            errors.append(f"Dockerfile: base image {image!r} is not the rayproject/ray Python 3.11 GPU image")
    for line in lines:
        if line.upper().startswith("COPY "):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            for src in parts[:-1]:
                if not os.path.exists(os.path.join(REPO, src)):
                    errors.append(f"Dockerfile: COPY source {src} does not exist")
    installs = [l for l in lines if "pip install" in l]
    if not installs or not all("-c constraints.txt" in l for l in installs):
        errors.append("Dockerfile: every pip install must use the project's pins (-c constraints.txt)")
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kustomizations", nargs="*", default=KUSTOMIZATIONS)
    parser.add_argument("--crd-dir", default=CRD_DIR)
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    crds = crd_validators(args.crd_dir)
    errors, count = dockerfile_errors(), 0
    for k in args.kustomizations:
        try:
            docs = build(k)
        except RuntimeError as exc:
            errors.append(str(exc))
            continue
        count += len(docs)
        errors += [f"{k}: {e}" for e in validate_docs(docs, crds)]
    for e in errors:
        print(e)
    print(f"{count} objects in {len(args.kustomizations)} kustomizations: "
          + (f"{len(errors)} problems" if errors else "valid"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
