#!/usr/bin/env python3
"""Offline checks of deploy/: run by .ci/deploy-checks, which installs what this needs.

- Renders every Kustomize kustomization under deploy/kubernetes/ (its `resources:` and
  `namespace:`; any other key is refused) and, when `kubectl` is on PATH, compares the
  result with `kubectl kustomize`.
- Validates every manifest against the Kubernetes JSON schemas (kubernetes-validate, strict,
  its newest Kubernetes version), the ServiceMonitor against
  deploy/kubernetes/schemas/servicemonitor.json and the cert-manager Certificate example
  against deploy/kubernetes/schemas/certificate.json.
- Checks the references between manifests: selectors, named ports, probes, ConfigMap and
  Secret references, scrape annotations, and that every ${env:NAME} of an embedded config
  is set from a Secret that the example Secret provides; the TLS files a listener names
  are in a Secret volume mounted whole (so renewals reach the pod), a Secret an
  *.example.yaml shows (or a cert-manager Certificate makes); every pod meets the "restricted"
  Pod Security Standard (which the ingress Namespace enforces), with resource requests and
  limits on every container.
- `promtool check rules` and `promtool test rules` on deploy/prometheus/.
- The Grafana dashboard loads, has a datasource variable, and every PromQL expression in it
  and in the alert rules names only metrics (and labels) that tollgate exports, per the
  README's metrics table (each also defined in src/metrics.rs); the dashboard's queries
  also pass promtool's parser.
- Every tollgate.yaml embedded in a ConfigMap passes `tollgate check`, with the files of
  its Secret mounts (TLS certificates) made by openssl for the check.
- A real Prometheus (Debian's package) scrapes a tollgate running on loopback, with the
  alert rules loaded; every dashboard query runs against it, and tollgate exports no
  metric that the README's table lacks.

Prints one line per check and ends with `deploy-checks: N passed, M failed`; exits 1 on
any failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "tollgate.json"
SERVICEMONITOR_SCHEMA = KUBE / "schemas" / "servicemonitor.json"
# Custom resources the manifests (or their examples) use: API group -> (kind, schema file).
CUSTOM_SCHEMAS = {
    "monitoring.coreos.com/": ("ServiceMonitor", SERVICEMONITOR_SCHEMA),
    "cert-manager.io/": ("Certificate", KUBE / "schemas" / "certificate.json"),
}
TOLLGATE_BIN = Path(os.environ.get("TOLLGATE_BIN", ROOT / "target" / "debug" / "tollgate"))

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}
# Labels that Prometheus scrape configs attach to every series (not in the README table).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
ENV_REF = re.compile(r"\$\{env:([^}]+)\}")


class CheckError(Exception):
    """A failed check; the message says what is wrong."""


RESULTS: list[tuple[str, str | None]] = []


def check(name: str, function, *args) -> None:
    try:
        function(*args)
    except CheckError as error:
        RESULTS.append((name, str(error)))
        print(f"FAIL {name}\n     " + str(error).replace("\n", "\n     "), flush=True)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        RESULTS.append((name, str(error)))
        print(f"FAIL {name}\n     cannot parse: " + str(error).replace("\n", "\n     "), flush=True)
    except Exception:  # a bug or an unreadable file: still a failure, with the trace
        RESULTS.append((name, traceback.format_exc()))
        print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    else:
        RESULTS.append((name, None))
        print(f"ok   {name}", flush=True)


def fail_if(problems: list[str]) -> None:
    if problems:
        raise CheckError("\n".join(problems))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- Kustomize -------------------------------------------------------------------------

def load_docs(path: Path) -> list[dict]:
    with open(path) as file:
        docs = [doc for doc in yaml.safe_load_all(file) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise CheckError(f"{rel(path)}: a document is not a Kubernetes object")
    return docs


def kustomizations() -> list[Path]:
    return sorted(path.parent for path in KUBE.rglob("kustomization.yaml"))


def render(directory: Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    """What `kustomize build` gives for the subset of Kustomize used here."""
    if directory in seen:
        raise CheckError(f"{rel(directory)}: kustomization cycle")
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZATION_KEYS
    if unknown:
        raise CheckError(
            f"{rel(directory)}/kustomization.yaml: keys {sorted(unknown)} are not supported by "
            f"this renderer (only {sorted(KUSTOMIZATION_KEYS)}); keep the manifests plain"
        )
    if spec.get("kind") != "Kustomization":
        raise CheckError(f"{rel(directory)}/kustomization.yaml: kind must be Kustomization")
    objects: list[dict] = []
    for entry in spec.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            if not (path / "kustomization.yaml").exists():
                raise CheckError(f"{rel(directory)}: resource {entry} has no kustomization.yaml")
            objects += render(path, seen + (directory,))
        elif path.is_file():
            objects += load_docs(path)
        else:
            raise CheckError(f"{rel(directory)}: resource {entry} does not exist")
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    ids = [object_id(obj) for obj in objects]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CheckError(f"{rel(directory)}: duplicate objects {duplicates}")
    return objects


def object_id(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj['kind']}/{meta.get('namespace', '-')}/{meta.get('name')}"


def canonical(objects: list[dict]) -> list[str]:
    return sorted(json.dumps(obj, sort_keys=True) for obj in objects)


def check_matches_kubectl(directory: Path, objects: list[dict]) -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print(f"     (kubectl not found: {rel(directory)} rendered by this script only)")
        return
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise CheckError(f"kubectl kustomize {rel(directory)} failed:\n{result.stderr.strip()}")
    theirs = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    if canonical(theirs) != canonical(objects):
        ours_ids = sorted(object_id(o) for o in objects)
        theirs_ids = sorted(object_id(o) for o in theirs)
        raise CheckError(
            f"this renderer and `kubectl kustomize` disagree on {rel(directory)}:\n"
            f"  ours:    {ours_ids}\n  kubectl: {theirs_ids}"
        )


# --- schemas ---------------------------------------------------------------------------

def validate_object(obj: dict, where: str, version: str, custom: dict[str, tuple[str, dict]]) -> list[str]:
    label = f"{where}: {object_id(obj)}"
    group = next((g for g in custom if obj["apiVersion"].startswith(g)), None)
    if group is not None:
        kind, schema = custom[group]
        if obj["kind"] != kind:
            return [f"{label}: no schema for {obj['apiVersion']} {obj['kind']}"]
        validator = jsonschema.Draft202012Validator(schema)
        return [
            f"{label}: {'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: str(list(e.absolute_path)))
        ]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(map(str, error.absolute_path)) or "(top)"
        return [f"{label}: {path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{label}: {error.message}"]
    return []


def check_schemas(rendered: dict[Path, list[dict]]) -> None:
    version = kubernetes_validate.latest_version()
    custom = {}
    for group, (kind, path) in CUSTOM_SCHEMAS.items():
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        custom[group] = (kind, schema)
    problems: list[str] = []
    count = 0
    for directory, objects in rendered.items():
        for obj in objects:
            problems += validate_object(obj, rel(directory), version, custom)
            count += 1
    for path in sorted(KUBE.rglob("*.example.yaml")):
        for obj in load_docs(path):
            problems += validate_object(obj, rel(path), version, custom)
            count += 1
    fail_if(problems)
    print(f"     ({count} objects, Kubernetes {version} schemas, strict)")


def check_every_file_is_used() -> None:
    used: set[Path] = set()
    for directory in kustomizations():
        used.add(directory / "kustomization.yaml")
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used.update((directory / entry).resolve() for entry in spec.get("resources") or [])
    problems = [
        f"{rel(path)} is in no kustomization (name it *.example.yaml if it is an example)"
        for path in sorted(KUBE.rglob("*.y*ml"))
        if path.resolve() not in used and not path.name.endswith(".example.yaml")
    ]
    fail_if(problems)


# --- references between manifests ------------------------------------------------------

def selects(selector: dict | None, labels: dict | None) -> bool:
    selector = selector or {}
    labels = labels or {}
    if selector.get("matchExpressions"):
        raise CheckError("matchExpressions are not evaluated by these checks")
    match = selector.get("matchLabels", selector if "matchLabels" not in selector else {})
    return all(labels.get(key) == value for key, value in match.items())


def pods(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(Deployment, pod template) pairs."""
    return [(o, o["spec"]["template"]) for o in objects if o["kind"] == "Deployment"]


def container_port(container: dict, port) -> int | None:
    for declared in container.get("ports") or []:
        if port in (declared.get("name"), declared["containerPort"]):
            return declared["containerPort"]
    return None


def embedded_config(objects: list[dict], container: dict, pod: dict) -> tuple[str, str] | None:
    """(ConfigMap name, tollgate.yaml text) for the container whose args name it."""
    args = container.get("args") or []
    if "--config" not in args:
        return None
    config_path = args[args.index("--config") + 1]
    for mount in container.get("volumeMounts") or []:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not config_path.startswith(prefix):
            continue
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
        if "configMap" not in volume:
            raise CheckError(f"{config_path} is mounted from a volume that is not a ConfigMap")
        name = volume["configMap"]["name"]
        configmap = find(objects, "ConfigMap", name)
        if configmap is None:
            raise CheckError(f"ConfigMap {name} (mounted at {mount['mountPath']}) is not rendered")
        file_name = config_path[len(prefix):]
        items = volume["configMap"].get("items")
        key = file_name
        if items:
            matching = [item["key"] for item in items if item["path"] == file_name]
            if not matching:
                raise CheckError(f"ConfigMap volume {volume['name']} has no item at {file_name}")
            key = matching[0]
        if key not in (configmap.get("data") or {}):
            raise CheckError(f"ConfigMap {name} has no key {key} for {config_path}")
        return name, configmap["data"][key]
    raise CheckError(f"container {container['name']}: nothing is mounted at {config_path}")


def secret_mounts(pod: dict, container: dict) -> list[str]:
    """Mount paths of whole Secret volumes (a subPath mount never sees an update)."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    return [
        mount["mountPath"].rstrip("/")
        for mount in container.get("volumeMounts") or []
        if "secret" in volumes.get(mount["name"], {}) and not mount.get("subPath")
    ]


def secret_mount_of(pod: dict, container: dict, path: str) -> str | None:
    """The Secret mount `path` is in, if any."""
    return next((m for m in secret_mounts(pod, container) if path.startswith(m + "/")), None)


def find(objects: list[dict], kind: str, name: str) -> dict | None:
    return next(
        (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None
    )


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def check_references(directory: Path, objects: list[dict]) -> None:
    problems: list[str] = []
    deployments = pods(objects)
    if not deployments:
        problems.append("no Deployment")
    examples = [o for p in directory.glob("*.example.yaml") for o in load_docs(p)]
    example_secrets = {o["metadata"]["name"]: o for o in examples if o["kind"] == "Secret"}
    # Secrets a cert-manager Certificate example makes (a TLS Secret: tls.crt, tls.key).
    certificate_secrets = {
        o["spec"]["secretName"] for o in examples if o["kind"] == "Certificate"
    }
    tollgates = 0
    for deployment, pod in deployments:
        name = deployment["metadata"]["name"]
        labels = pod["metadata"].get("labels")
        if not selects(deployment["spec"]["selector"], labels):
            problems.append(f"Deployment {name}: selector does not match its pod labels")
        volumes = {v["name"] for v in pod["spec"].get("volumes") or []}
        for container in pod["spec"]["containers"]:
            where = f"Deployment {name}, container {container['name']}"
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    problems.append(f"{where}: volumeMount {mount['name']} has no volume")
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if probe and "httpGet" in probe:
                    if container_port(container, probe["httpGet"]["port"]) is None:
                        problems.append(f"{where}: {probe_name} port is not a container port")
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = example_secrets.get(ref["name"])
                    if secret is None:
                        problems.append(
                            f"{where}: env {env['name']} reads Secret {ref['name']}, "
                            f"which no *.example.yaml in {rel(directory)} shows"
                        )
                    elif ref["key"] not in (secret.get("stringData") or secret.get("data") or {}):
                        problems.append(
                            f"{where}: env {env['name']}: the example Secret {ref['name']} "
                            f"has no key {ref['key']}"
                        )
            config = embedded_config(objects, container, pod)
            if config is None:
                continue
            tollgates += 1
            configmap_name, text = config
            problems += check_tollgate_container(where, pod, container, text)
        problems += restricted_problems(f"Deployment {name}", pod["spec"])
        for volume in pod["spec"].get("volumes") or []:
            if "configMap" in volume and not find(objects, "ConfigMap", volume["configMap"]["name"]):
                problems.append(f"Deployment {name}: ConfigMap {volume['configMap']['name']} is not rendered")
            secret = (volume.get("secret") or {}).get("secretName")
            if secret and secret not in example_secrets and secret not in certificate_secrets:
                problems.append(
                    f"Deployment {name}: volume {volume['name']} mounts Secret {secret}, which no "
                    f"*.example.yaml in {rel(directory)} shows (as a Secret or a Certificate's secretName)"
                )
    if tollgates == 0:
        problems.append("no tollgate container (a container with --config mounted from a ConfigMap)")

    def pod_for(selector: dict) -> list[tuple[dict, dict]]:
        return [(d, p) for d, p in deployments if selects(selector, p["metadata"].get("labels"))]

    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        if kind == "Service":
            targets = pod_for(spec.get("selector") or {})
            if not targets:
                problems.append(f"Service {name}: selects no pod")
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port["port"])
                for deployment, pod in targets:
                    if not any(container_port(c, target) for c in pod["spec"]["containers"]):
                        problems.append(f"Service {name}: targetPort {target} is no container port")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            if not find(objects, ref["kind"], ref["name"]):
                problems.append(f"HPA {name}: scale target {ref['kind']}/{ref['name']} not rendered")
            if spec.get("minReplicas", 1) > spec["maxReplicas"]:
                problems.append(f"HPA {name}: minReplicas above maxReplicas")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = spec.get("selector") if kind == "PodDisruptionBudget" else spec.get("podSelector")
            if not pod_for(selector):
                problems.append(f"{kind} {name}: selects no pod")
        elif kind == "ServiceMonitor":
            services = [
                o for o in objects
                if o["kind"] == "Service" and selects(spec["selector"], o["metadata"].get("labels"))
            ]
            if not services:
                problems.append(f"ServiceMonitor {name}: selects no Service")
            for endpoint in spec["endpoints"]:
                for service in services:
                    if endpoint.get("port") and endpoint["port"] not in [
                        p.get("name") for p in service["spec"]["ports"]
                    ]:
                        problems.append(
                            f"ServiceMonitor {name}: Service {service['metadata']['name']} has no port named {endpoint['port']}"
                        )
    fail_if(problems)


RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}


def restricted_problems(where: str, spec: dict) -> list[str]:
    """What the "restricted" Pod Security Standard would refuse (the Namespace enforces it)."""
    problems = []
    pod_context = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{where}: {key}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} of type {sorted(kinds)}")
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        label = f"{where}, container {container['name']}"
        context = container.get("securityContext") or {}
        effective = {**pod_context, **context}
        if effective.get("runAsNonRoot") is not True:
            problems.append(f"{label}: runAsNonRoot is not true")
        if effective.get("runAsUser") == 0:
            problems.append(f"{label}: runAsUser 0")
        if (effective.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{label}: seccompProfile is not RuntimeDefault")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            problems.append(f"{label}: privileged")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{label}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{label}: adds capabilities {capabilities['add']}")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{label}: readOnlyRootFilesystem is not true")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            problems.append(f"{label}: hostPort")
        for key in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (container.get("resources") or {}).get(key, {}):
                    problems.append(f"{label}: no resources.{key}.{resource}")
    return problems


def check_tollgate_container(where: str, pod: dict, container: dict, text: str) -> list[str]:
    problems = []
    config = yaml.safe_load(text)
    server = config.get("server") or {}
    admin = server.get("admin", "127.0.0.1:9901")
    listen = server.get("listen", ["0.0.0.0:8080"])
    if host_of(admin) in ("127.0.0.1", "::1", "localhost"):
        problems.append(
            f"{where}: server.admin is {admin}: loopback, so the kubelet's probes and "
            f"Prometheus cannot reach it; use 0.0.0.0:{port_of(admin)}"
        )
    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = (container.get(probe_name) or {}).get("httpGet")
        if not probe:
            problems.append(f"{where}: no {probe_name}")
            continue
        if probe.get("path") != path:
            problems.append(f"{where}: {probe_name} path is {probe.get('path')}, expected {path}")
        if container_port(container, probe["port"]) != port_of(admin):
            problems.append(f"{where}: {probe_name} port is not the admin port {port_of(admin)}")
    for entry in listen:
        address = entry["address"] if isinstance(entry, dict) else entry
        if container_port(container, port_of(address)) is None:
            problems.append(f"{where}: listen port {port_of(address)} is not a container port")
        for key, path in ((entry.get("tls") or {}).items() if isinstance(entry, dict) else []):
            mount = secret_mount_of(pod, container, path)
            if mount is None:
                problems.append(
                    f"{where}: listener {address}: tls.{key} {path} is not in a Secret volume "
                    f"(mounted whole, not by subPath, so that renewals reach the pod)"
                )
    annotations = pod["metadata"].get("annotations") or {}
    if annotations.get("prometheus.io/scrape") != "true":
        problems.append(f"{where}: pod lacks the annotation prometheus.io/scrape: \"true\"")
    if annotations.get("prometheus.io/port") != str(port_of(admin)):
        problems.append(f"{where}: prometheus.io/port is not the admin port {port_of(admin)}")
    if annotations.get("prometheus.io/path") != "/metrics":
        problems.append(f"{where}: prometheus.io/path is not /metrics")
    env = {e["name"]: e for e in container.get("env") or []}
    for name in sorted(set(ENV_REF.findall(text))):
        entry = env.get(name)
        if entry is None:
            problems.append(f"{where}: the config names ${{env:{name}}} but the container does not set {name}")
        elif not (entry.get("valueFrom") or {}).get("secretKeyRef"):
            problems.append(f"{where}: {name} should come from a Secret (valueFrom.secretKeyRef)")
    return problems


# --- tollgate check --------------------------------------------------------------------

def tls_files(directory: Path) -> None:
    """What a kubernetes.io/tls Secret holds (tls.crt, tls.key, ca.crt), made now."""
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=deploy-checks",
         "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        raise CheckError(f"openssl could not make a test certificate:\n{result.stderr}")
    shutil.copy(directory / "tls.crt", directory / "ca.crt")


def check_tollgate_accepts(directory: Path, objects: list[dict]) -> None:
    """`tollgate check` on each embedded config, with the files of its Secret mounts (the
    TLS certificates) made for the check."""
    configs = []
    for _, pod in pods(objects):
        for container in pod["spec"]["containers"]:
            embedded = embedded_config(objects, container, pod)
            if embedded is not None:
                configs.append((embedded, secret_mounts(pod, container)))
    if not configs:
        raise CheckError(f"{rel(directory)}: no ConfigMap holds a tollgate.yaml")
    if not TOLLGATE_BIN.exists():
        raise CheckError(f"{TOLLGATE_BIN} not found (cargo build --bin tollgate)")
    problems = []
    # Each ${env:NAME} gets what the example Secret (*.example.yaml) shows for the key the
    # container reads NAME from: the shape the deployer is told to give it.
    examples = {
        o["metadata"]["name"]: o.get("stringData") or {}
        for p in directory.glob("*.example.yaml") for o in load_docs(p) if o["kind"] == "Secret"
    }
    shown: dict[str, str] = {}
    for _, pod in pods(objects):
        for container in pod["spec"]["containers"]:
            for entry in container.get("env") or []:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] in examples.get(ref["name"], {}):
                    shown[entry["name"]] = examples[ref["name"]][ref["key"]]
    for (configmap_name, text), mounts in configs:
        env = dict(os.environ)
        for name in ENV_REF.findall(text):
            env[name] = shown.get(name, "placeholder-value")
        with tempfile.TemporaryDirectory() as temp:
            for index, mount in enumerate(mounts):
                files = Path(temp) / str(index)
                files.mkdir()
                tls_files(files)
                text = text.replace(mount + "/", f"{files}/")
            path = Path(temp) / "tollgate.yaml"
            path.write_text(text)
            result = subprocess.run(
                [str(TOLLGATE_BIN), "check", "--config", str(path)],
                env=env, capture_output=True, text=True, timeout=60,
            )
        if result.returncode != 0 or ": OK" not in result.stdout:
            problems.append(
                f"ConfigMap {configmap_name}: tollgate check failed "
                f"(exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
    fail_if(problems)


# --- Prometheus ------------------------------------------------------------------------

def promtool(*args: str) -> None:
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise CheckError(f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}")


def exported_metrics() -> dict[str, set[str]]:
    """Series names tollgate exports, with their labels, from the README's metrics table."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Metrics\n(.*?)(?=^## )", readme, re.S | re.M)
    if not match:
        raise CheckError("README.md has no `## Metrics` section")
    source = (ROOT / "src" / "metrics.rs").read_text()
    metrics: dict[str, set[str]] = {}
    problems = []
    for line in match.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        name = re.match(r"`([a-z_:]+)`", cells[0]).group(1)
        labels = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[1])))
        if f'"{name}"' not in source:
            problems.append(f"README.md lists {name}, which src/metrics.rs does not define")
        full = f"tollgate_{name}"
        if "histogram" in cells[0]:
            metrics[f"{full}_bucket"] = labels | {"le"}
            metrics[f"{full}_sum"] = labels
            metrics[f"{full}_count"] = labels
        else:
            metrics[full] = labels
    fail_if(problems)
    if len(metrics) < 5:
        raise CheckError(f"could not read the README's metrics table (found {sorted(metrics)})")
    return metrics


PROMQL_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')'
    r"|(?P<braces>\{[^{}]*\})"
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<number>\d[\w.]*)"
    r"|(?P<variable>\$\{?\w+\}?)"
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)"
)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATORS = {"and", "or", "unless", "bool", "offset", "atan2"}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "limitk", "limit_ratio",
}


def promql_problems(expr: str, metrics: dict[str, set[str]]) -> list[str]:
    """Metric names and label names in `expr` that tollgate does not export."""
    tokens = [
        (m.lastgroup, m.group()) for m in PROMQL_TOKEN.finditer(expr) if m.lastgroup != "space"
    ]
    problems = []
    used_metrics: list[str] = []
    grouping_labels: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind == "ident" and text in GROUPING:
            if following[1] == "(":
                j = i + 2
                while j < len(tokens) and tokens[j][1] != ")":
                    if tokens[j][0] == "ident":
                        grouping_labels.add(tokens[j][1])
                    j += 1
                i = j + 1
                continue
        elif kind == "ident" and (following[1] == "(" or text in AGGREGATIONS):
            pass  # a function or an aggregation
        elif kind == "ident" and text not in OPERATORS:
            used_metrics.append(text)
            if text not in metrics:
                problems.append(f"metric {text} is not one tollgate exports")
            elif following[0] == "braces":
                for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", following[1]):
                    if label not in metrics[text] | TARGET_LABELS:
                        problems.append(f"{text} has no label {label}")
        elif kind == "braces" and (i == 0 or tokens[i - 1][0] != "ident"):
            problems.append(f"a selector without a metric name: {text}")
        i += 1
    if not used_metrics:
        problems.append("names no tollgate metric")
    known = set().union(*(metrics.get(m, set()) for m in used_metrics)) | TARGET_LABELS
    for label in sorted(grouping_labels - known):
        problems.append(f"groups by {label}, which none of its metrics has")
    return problems


def check_alert_metrics(metrics: dict[str, set[str]]) -> None:
    rules = yaml.safe_load((PROM / "alerts.yaml").read_text())
    problems = []
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            names.add(name)
            problems += [f"{name}: {p}" for p in promql_problems(rule["expr"], metrics)]
            if "alert" in rule:
                if "for" not in rule:
                    problems.append(f"{name}: no `for:`")
                if "severity" not in (rule.get("labels") or {}):
                    problems.append(f"{name}: no severity label")
                for key in ("summary", "description"):
                    if key not in (rule.get("annotations") or {}):
                        problems.append(f"{name}: no {key} annotation")
    tested = yaml.safe_load((PROM / "alerts.test.yaml").read_text())
    covered = {t["alertname"] for test in tested["tests"] for t in test.get("alert_rule_test", [])}
    problems += [f"{name}: no test in alerts.test.yaml" for name in sorted(names - covered)]
    fail_if(problems)


def dashboard_panels(panels: list[dict]) -> list[dict]:
    found = []
    for panel in panels:
        found.append(panel)
        found += dashboard_panels(panel.get("panels") or [])
    return found


def check_dashboard(metrics: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    problems = []
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    datasource = variables.get("datasource")
    if not datasource or datasource.get("type") != "datasource" or datasource.get("query") != "prometheus":
        problems.append("no `datasource` template variable of type datasource for prometheus")
    panels = dashboard_panels(dashboard.get("panels") or [])
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids) or None in ids:
        problems.append(f"panel ids are missing or not unique: {ids}")
    expressions = []
    for panel in panels:
        if panel.get("type") == "row":
            continue
        title = panel.get("title", f"panel {panel.get('id')}")
        if "gridPos" not in panel:
            problems.append(f"{title}: no gridPos")
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{title}: datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no query")
        for target in targets:
            if (target.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                problems.append(f"{title}: a query's datasource is not ${{datasource}}")
            expr = target.get("expr", "")
            expressions.append((title, expr))
            problems += [f"{title}: {p}" for p in promql_problems(expr, metrics)]
    for variable in variables.values():
        if variable.get("type") == "query":
            query = variable.get("definition") or ""
            names = re.findall(r"\b(tollgate_\w+)", query)
            if not names or any(n not in metrics for n in names):
                problems.append(f"variable {variable['name']}: query {query!r} names no exported metric")
    used = " ".join(expr for _, expr in expressions)
    wanted = [
        "tollgate_requests_total", "tollgate_request_duration_seconds_bucket",
        "tollgate_token_requests_total", "tollgate_token_expiry_timestamp_seconds",
        "tollgate_upstream_retries_total", "tollgate_credential_unavailable_total",
        "tollgate_token_cache_lookups_total",
    ]
    problems += [f"no panel shows {name}" for name in wanted if name not in used]
    if "histogram_quantile" not in used:
        problems.append("no latency percentile panel (histogram_quantile)")
    fail_if(problems)
    # promtool parses every query: as recording rules, with Grafana's variables filled in.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{index}:query", "expr": grafana_to_promql(expr)}
        for index, (_, expr) in enumerate(expressions)
    ]}]}
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "dashboard-queries.yaml"
        path.write_text(yaml.safe_dump(rules))
        promtool("check", "rules", str(path))
    print(f"     ({len(expressions)} queries in {len(panels)} panels)")


def grafana_to_promql(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


# --- a real Prometheus scraping a running tollgate -----------------------------------

def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def prometheus_query(base: str, query: str) -> list[dict]:
    from urllib.parse import quote
    status, body = http_get(f"{base}/api/v1/query?query={quote(query)}")
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        raise CheckError(f"query {query!r}: {answer.get('error', body)}")
    return answer["data"]["result"]


def check_live_scrape(metrics: dict[str, set[str]]) -> None:
    """tollgate runs on loopback, Prometheus scrapes it with the alert rules loaded, and
    every dashboard query runs against the scraped data."""
    import time
    if not TOLLGATE_BIN.exists():
        raise CheckError(f"{TOLLGATE_BIN} not found")
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise CheckError("the prometheus binary is not on PATH (Debian package prometheus)")
    proxy, admin, upstream, web = free_port(), free_port(), free_port(), free_port()
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as temp:
        temp_path = Path(temp)
        config = temp_path / "tollgate.yaml"
        # A static provider needs no network; nothing listens on the upstream port, so
        # the proxied requests get tollgate's own 502.
        config.write_text(f"""
server: {{ listen: ["127.0.0.1:{proxy}"], admin: "127.0.0.1:{admin}", threads: 1 }}
providers:
  key: {{ type: static, value: live-check-key }}
routes:
  - name: live
    match: {{ path_prefix: /live/ }}
    upstream: {{ url: "http://127.0.0.1:{upstream}" }}
    credential: {{ provider: key, header: X-Api-Key, format: "{{token}}" }}
""")
        prom_config = temp_path / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROM / "alerts.yaml")],
            "scrape_configs": [{
                "job_name": "tollgate",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{admin}"]}],
            }],
        }))
        log = open(temp_path / "processes.log", "w")
        try:
            processes.append(subprocess.Popen(
                [str(TOLLGATE_BIN), "run", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT,
            ))
            processes.append(subprocess.Popen(
                [prometheus, f"--config.file={prom_config}",
                 f"--storage.tsdb.path={temp_path / 'data'}",
                 f"--web.listen-address=127.0.0.1:{web}"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
            base = f"http://127.0.0.1:{web}"
            deadline = time.monotonic() + 30
            up = False
            while time.monotonic() < deadline and not up:
                time.sleep(0.25)
                for process in processes:
                    if process.poll() is not None:
                        log.flush()
                        raise CheckError(
                            f"{process.args[0]} exited ({process.returncode}):\n"
                            + (temp_path / "processes.log").read_text()[-3000:]
                        )
                try:
                    for _ in range(3):
                        http_get(f"http://127.0.0.1:{proxy}/live/x", timeout=2)
                    http_get(f"http://127.0.0.1:{proxy}/no-route", timeout=2)
                    result = prometheus_query(base, 'up{job="tollgate"}')
                    up = bool(result) and result[0]["value"][1] == "1"
                except (OSError, CheckError, ValueError):
                    continue
            if not up:
                raise CheckError("Prometheus did not scrape tollgate within 30s:\n"
                                 + (temp_path / "processes.log").read_text()[-3000:])
            time.sleep(2)  # a few more scrapes, so that rate() has samples
            problems = []
            scraped = {
                series["metric"]["__name__"]
                for series in prometheus_query(base, '{job="tollgate",__name__=~"tollgate_.+"}')
            }
            undocumented = sorted(scraped - set(metrics))
            if undocumented:
                problems.append(f"tollgate exports metrics the README's table does not list: {undocumented}")
            for expected in ("tollgate_build_info", "tollgate_requests_total",
                             "tollgate_request_duration_seconds_bucket"):
                if expected not in scraped:
                    problems.append(f"{expected} was not scraped (got {sorted(scraped)})")
            dashboard = json.loads(DASHBOARD.read_text())
            for panel in dashboard_panels(dashboard.get("panels") or []):
                for target in panel.get("targets") or []:
                    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "1m", target["expr"])
                    expr = re.sub(r"\$\{?job\}?", "tollgate", expr)
                    try:
                        prometheus_query(base, expr)
                    except CheckError as error:
                        problems.append(f"dashboard panel {panel['title']}: {error}")
            status, body = http_get(f"{base}/api/v1/rules")
            groups = json.loads(body)["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if len(rules) < 4 or any(rule.get("health") == "err" for rule in rules):
                problems.append(f"the alert rules did not load cleanly: {body[:2000]}")
            fail_if(problems)
            print(f"     ({len(scraped)} tollgate series names scraped, {len(rules)} rules loaded)")
        finally:
            # SIGINT: tollgate (pingora) exits at once; SIGTERM would wait out its grace period.
            for process in processes:
                process.send_signal(signal.SIGINT)
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()


# --- main ------------------------------------------------------------------------------

def main() -> int:
    os.chdir(ROOT)
    rendered: dict[Path, list[dict]] = {}
    directories = kustomizations()
    def some_kustomizations() -> None:
        if len(directories) < 2:
            raise CheckError(f"expected the ingress and sidecar kustomizations, found {directories}")
    check("kustomizations under deploy/kubernetes", some_kustomizations)

    for directory in directories:
        def do_render(directory=directory):
            rendered[directory] = render(directory)
            check_matches_kubectl(directory, rendered[directory])
        check(f"render {rel(directory)}", do_render)
    check("every manifest is in a kustomization or an *.example.yaml", check_every_file_is_used)
    check("Kubernetes schemas (kubernetes-validate), the ServiceMonitor and Certificate schemas", check_schemas, rendered)
    for directory, objects in rendered.items():
        check(f"references in {rel(directory)}", check_references, directory, objects)
        check(f"tollgate check on the ConfigMaps of {rel(directory)}", check_tollgate_accepts, directory, objects)

    check("promtool check rules deploy/prometheus/alerts.yaml",
          promtool, "check", "rules", str(PROM / "alerts.yaml"))
    check("promtool test rules deploy/prometheus/alerts.test.yaml",
          promtool, "test", "rules", str(PROM / "alerts.test.yaml"))
    metrics: dict[str, set[str]] = {}
    check("metrics table in README.md matches src/metrics.rs", lambda: metrics.update(exported_metrics()))
    if metrics:
        check("alert rules use only exported metrics and labels", check_alert_metrics, metrics)
        check("Grafana dashboard loads; its queries use only exported metrics", check_dashboard, metrics)
        check("Prometheus scrapes a running tollgate; the dashboard's queries run", check_live_scrape, metrics)

    failed = sum(1 for _, error in RESULTS if error)
    print(f"deploy-checks: {len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
