//! deploy/: what can be checked without a container engine or a cluster. The Dockerfile
//! builds the `tollgate` binary in one stage and runs it, as a non-root numeric user, in
//! another; the user, the config path and the ports it names agree with the binary's
//! defaults and with the Kubernetes manifests; and the config each ConfigMap embeds is one
//! tollgate accepts. (`.ci/deploy-checks` validates the manifests against the Kubernetes
//! schemas and checks the alert rules and the dashboard.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;
use tollgate::config::{DEFAULT_ADMIN, DEFAULT_LISTEN};

const MODES: [&str; 2] = ["ingress", "sidecar"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// --- the Dockerfile --------------------------------------------------------------------

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    /// (INSTRUCTION in upper case, arguments), continuation lines joined.
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instruction: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(name, _)| name == instruction)
            .map(|(_, args)| args.as_str())
            .collect()
    }

    fn last(&self, instruction: &str) -> Option<&str> {
        self.all(instruction).last().copied()
    }
}

fn dockerfile() -> Vec<Stage> {
    let text = read(&root().join("deploy/Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if instruction == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage {
                name,
                instructions: vec![(instruction, args)],
            });
        } else {
            stages
                .last_mut()
                .expect("the Dockerfile starts with FROM")
                .instructions
                .push((instruction, args));
        }
    }
    stages
}

/// The stages: (the one that builds the binary, the last one, which runs it).
fn build_and_runtime(stages: &[Stage]) -> (&Stage, &Stage) {
    assert!(
        stages.len() >= 2,
        "deploy/Dockerfile should be multi-stage (build, runtime), found {} stage(s)",
        stages.len()
    );
    let runtime = stages.last().unwrap();
    let build = stages
        .iter()
        .find(|stage| {
            stage
                .all("RUN")
                .iter()
                .any(|run| run.contains("cargo build"))
        })
        .expect("a stage runs `cargo build`");
    assert!(
        !std::ptr::eq(build, runtime),
        "the runtime stage must not be the build stage"
    );
    (build, runtime)
}

/// A JSON-array (exec form) instruction argument.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|_| panic!("`{args}` should be in exec form, a JSON array"))
}

fn port(address: &str) -> u16 {
    address
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{address}: {e}"))
        .port()
}

/// The uid of the runtime stage's USER (`10001` or `10001:10001`).
fn dockerfile_uid() -> u32 {
    let stages = dockerfile();
    let (_, runtime) = build_and_runtime(&stages);
    let user = runtime
        .last("USER")
        .expect("the runtime stage sets USER (never run as root)");
    let uid = user.split(':').next().unwrap();
    uid.parse().unwrap_or_else(|_| {
        panic!("USER {user} should be numeric, so that runAsNonRoot can verify it")
    })
}

fn dockerfile_env(name: &str) -> String {
    let stages = dockerfile();
    let (_, runtime) = build_and_runtime(&stages);
    runtime
        .all("ENV")
        .iter()
        .find_map(|args| {
            let (key, value) = args.split_once('=').or_else(|| args.split_once(' '))?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("the runtime stage sets no ENV {name}"))
}

#[test]
fn the_dockerfile_builds_tollgate_in_one_stage_and_runs_it_in_another() {
    let stages = dockerfile();
    let (build, runtime) = build_and_runtime(&stages);
    let build_name = build
        .name
        .as_deref()
        .expect("the build stage is named (FROM ... AS build)");

    let cargo = build
        .all("RUN")
        .into_iter()
        .find(|run| run.contains("cargo build"))
        .unwrap();
    assert!(cargo.contains("--release"), "{cargo}");
    assert!(
        cargo.contains("--bin tollgate"),
        "the build stage should build the tollgate binary: {cargo}"
    );
    assert!(cargo.contains("--locked"), "build with Cargo.lock: {cargo}");
    assert!(
        cargo.contains("--no-default-features"),
        "the image ships no stand-in code: build without the default `demo` feature: {cargo}"
    );
    assert!(
        cargo.contains("--features small-heap"),
        "the image keeps the default build's allocator setting: {cargo}"
    );
    let copies = build.all("COPY");
    assert!(
        copies.iter().any(|copy| copy.starts_with("vendor ")),
        "the build stage needs the patched pingora crates [patch.crates-io] points at: {copies:?}"
    );

    let workdir = build.last("WORKDIR").expect("the build stage sets WORKDIR");
    let built = format!("{}/target/release/tollgate", workdir.trim_end_matches('/'));
    let copy = runtime
        .all("COPY")
        .into_iter()
        .find(|copy| copy.starts_with(&format!("--from={build_name} ")))
        .expect("the runtime stage copies from the build stage");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(
        parts.len(),
        3,
        "COPY --from={build_name} SOURCE DEST: {copy}"
    );
    assert_eq!(
        parts[1], built,
        "the runtime stage should copy the binary the build made"
    );
    let installed = parts[2];

    let entrypoint = exec_form(runtime.last("ENTRYPOINT").expect("an ENTRYPOINT"));
    assert_eq!(
        entrypoint.first().map(String::as_str),
        Some(installed),
        "the ENTRYPOINT should be the tollgate binary copied from the build stage"
    );
    if let Some(cmd) = runtime.last("CMD") {
        assert_eq!(exec_form(cmd).first().map(String::as_str), Some("run"));
    }

    let from = runtime.last("FROM").unwrap();
    assert!(
        !from.starts_with("rust"),
        "the runtime image should be a small one, not the Rust toolchain: {from}"
    );
}

#[test]
fn the_build_stage_copies_everything_cargo_needs() {
    let stages = dockerfile();
    let (build, _) = build_and_runtime(&stages);
    let copied: BTreeSet<String> = build
        .all("COPY")
        .iter()
        .filter(|copy| !copy.starts_with("--from"))
        .flat_map(|copy| {
            let parts: Vec<&str> = copy.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|source| source.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "src"].map(String::from).into();

    // Targets the manifest declares must exist for cargo to read it (e.g. [[bench]]).
    let manifest: toml_lite::Manifest = toml_lite::read(&read(&root().join("Cargo.toml")));
    for (kind, name, path) in manifest.targets {
        let path = path.unwrap_or_else(|| match kind.as_str() {
            "bench" => format!("benches/{name}.rs"),
            "test" => format!("tests/{name}.rs"),
            "example" => format!("examples/{name}.rs"),
            _ => format!("src/bin/{name}.rs"),
        });
        needed.insert(top_level(&path));
    }
    if root().join("build.rs").exists() {
        needed.insert("build.rs".into());
    }
    // Every workspace member: cargo reads their manifests to resolve the workspace, even
    // for a build that leaves them out.
    let mut sources = vec![root().join("src")];
    for member in manifest.members.iter().filter(|member| *member != ".") {
        needed.insert(top_level(member));
        sources.push(root().join(member).join("src"));
    }
    // Files the sources embed at compile time (include_str!, include_bytes!).
    for file in sources.iter().flat_map(|dir| rust_files(dir)) {
        let text = read(&file);
        for embedded in text
            .split("include_str!(\"")
            .chain(text.split("include_bytes!(\""))
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(path, _)| path))
        {
            let target = file.parent().unwrap().join(embedded);
            let target = normalize(&target);
            if let Ok(inside) = target.strip_prefix(root()) {
                needed.insert(top_level(&inside.to_string_lossy()));
            }
        }
    }
    let missing: Vec<&String> = needed.difference(&copied).collect();
    assert!(
        missing.is_empty(),
        "deploy/Dockerfile's build stage should COPY {missing:?} (copies {copied:?})"
    );
}

fn top_level(path: &str) -> String {
    path.split('/').next().unwrap().to_owned()
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// Just enough of Cargo.toml: the `[[bin]]`, `[[bench]]`, `[[test]]`, `[[example]]` tables.
mod toml_lite {
    pub struct Manifest {
        /// (kind, name, path)
        pub targets: Vec<(String, String, Option<String>)>,
        /// `[workspace] members`, written on one line.
        pub members: Vec<String>,
    }

    pub fn read(text: &str) -> Manifest {
        let mut targets = Vec::new();
        let mut members = Vec::new();
        let mut in_workspace = false;
        let mut current: Option<(String, String, Option<String>)> = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                targets.extend(current.take());
                in_workspace = line == "[workspace]";
                if let Some(kind) = line
                    .strip_prefix("[[")
                    .and_then(|rest| rest.strip_suffix("]]"))
                {
                    current = Some((kind.trim().to_owned(), String::new(), None));
                }
            } else if in_workspace {
                if let Some(("members", list)) = line
                    .split_once('=')
                    .map(|(key, value)| (key.trim(), value.trim()))
                {
                    members = list
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .split(',')
                        .map(|member| member.trim().trim_matches('"').to_owned())
                        .filter(|member| !member.is_empty())
                        .collect();
                }
            } else if let Some((_, name, path)) = current.as_mut() {
                if let Some((key, value)) = line.split_once('=') {
                    let value = value.trim().trim_matches('"').to_owned();
                    match key.trim() {
                        "name" => *name = value,
                        "path" => *path = Some(value),
                        _ => {}
                    }
                }
            }
        }
        targets.extend(current);
        Manifest { targets, members }
    }
}

#[test]
fn the_runtime_stage_runs_as_a_non_root_numeric_user() {
    let uid = dockerfile_uid();
    assert_ne!(uid, 0, "the runtime USER must not be root");
    let stages = dockerfile();
    let (_, runtime) = build_and_runtime(&stages);
    let user = runtime.last("USER").unwrap();
    if let Some(gid) = user.split(':').nth(1) {
        assert!(
            gid.parse::<u32>().is_ok_and(|gid| gid != 0),
            "USER {user}: numeric non-root group"
        );
    }
}

#[test]
fn the_dockerfile_config_path_and_ports_match_the_binary() {
    assert_eq!(
        dockerfile_env("TOLLGATE_CONFIG"),
        "/etc/tollgate/tollgate.yaml",
        "the config path the README and the manifests use"
    );
    let stages = dockerfile();
    let (_, runtime) = build_and_runtime(&stages);
    let exposed: BTreeSet<u16> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|args| args.split_whitespace())
        .map(|port| {
            port.trim_end_matches("/tcp")
                .parse()
                .expect("numeric EXPOSE")
        })
        .collect();
    let defaults: BTreeSet<u16> = [port(DEFAULT_LISTEN), port(DEFAULT_ADMIN)].into();
    assert_eq!(
        exposed, defaults,
        "EXPOSE should name the proxy and admin ports tollgate listens on by default"
    );
}

// --- the Kubernetes manifests ----------------------------------------------------------

/// The objects of a kustomization: its `resources:`, each file's documents.
fn rendered(mode: &str) -> Vec<Value> {
    let dir = root().join("deploy/kubernetes").join(mode);
    let kustomization: Value =
        serde_yaml_ng::from_str(&read(&dir.join("kustomization.yaml"))).unwrap();
    let resources = kustomization["resources"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{mode}/kustomization.yaml lists no resources"));
    let mut objects = Vec::new();
    for resource in resources {
        let path = dir.join(resource.as_str().unwrap());
        assert!(
            path.is_file(),
            "{}: only plain manifest files are expected",
            path.display()
        );
        objects.extend(documents(&read(&path)));
    }
    objects
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// (pod spec, tollgate container) for every Deployment of a mode.
fn tollgate_containers(objects: &[Value]) -> Vec<(&Value, &Value)> {
    let mut found = Vec::new();
    for deployment in of_kind(objects, "Deployment") {
        let pod = &deployment["spec"]["template"]["spec"];
        for container in pod["containers"].as_sequence().unwrap() {
            if container["image"]
                .as_str()
                .is_some_and(|image| image.contains("tollgate"))
            {
                found.push((pod, container));
            }
        }
    }
    found
}

/// A container field from the container's securityContext, else the pod's.
fn effective<'a>(pod: &'a Value, container: &'a Value, key: &str) -> &'a Value {
    let own = &container["securityContext"][key];
    if own.is_null() {
        &pod["securityContext"][key]
    } else {
        own
    }
}

/// The number of a container port given by name or number.
fn container_port(container: &Value, port: &Value) -> Option<u16> {
    container["ports"]
        .as_sequence()?
        .iter()
        .find_map(|declared| {
            let matches = declared["name"] == *port || declared["containerPort"] == *port;
            matches.then(|| declared["containerPort"].as_u64().unwrap() as u16)
        })
}

#[test]
fn every_mode_has_a_tollgate_container_with_the_dockerfile_user_and_a_locked_down_context() {
    let uid = dockerfile_uid();
    for mode in MODES {
        let objects = rendered(mode);
        let containers = tollgate_containers(&objects);
        assert_eq!(containers.len(), 1, "{mode}: one tollgate container");
        for (pod, container) in containers {
            assert_eq!(
                effective(pod, container, "runAsUser").as_u64(),
                Some(u64::from(uid)),
                "{mode}: runAsUser should be the Dockerfile's USER {uid}"
            );
            assert_eq!(
                effective(pod, container, "runAsNonRoot"),
                &Value::Bool(true),
                "{mode}"
            );
            let context = &container["securityContext"];
            assert_eq!(
                context["readOnlyRootFilesystem"],
                Value::Bool(true),
                "{mode}"
            );
            assert_eq!(
                context["allowPrivilegeEscalation"],
                Value::Bool(false),
                "{mode}"
            );
            let dropped: Vec<&str> = context["capabilities"]["drop"]
                .as_sequence()
                .map(|drop| drop.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(dropped, ["ALL"], "{mode}: capabilities drop ALL");
            assert!(
                context["capabilities"]["add"].is_null(),
                "{mode}: no capability added"
            );
            assert_eq!(
                effective(pod, container, "seccompProfile")["type"],
                "RuntimeDefault",
                "{mode}"
            );
            assert_eq!(
                pod["terminationGracePeriodSeconds"].as_u64(),
                Some(30),
                "{mode}"
            );
            for key in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !container["resources"][key][resource].is_null(),
                        "{mode}: resources.{key}.{resource} is set"
                    );
                }
            }
        }
    }
}

#[test]
fn the_manifests_use_the_dockerfile_config_path_and_mount_it_from_a_configmap() {
    let config_path = dockerfile_env("TOLLGATE_CONFIG");
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    for mode in MODES {
        let objects = rendered(mode);
        for (pod, container) in tollgate_containers(&objects) {
            let args: Vec<&str> = container["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(args, ["run", "--config", config_path.as_str()], "{mode}");
            let mount = container["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == config_dir)
                .unwrap_or_else(|| panic!("{mode}: nothing is mounted at {config_dir}"));
            assert!(
                mount["subPath"].is_null(),
                "{mode}: mount the directory, not a subPath, so ConfigMap updates reach the pod"
            );
            let volume = volume_of(pod, mount);
            let configmap = named(
                &objects,
                "ConfigMap",
                volume["configMap"]["name"].as_str().unwrap(),
            );
            let key = volume["configMap"]["items"]
                .as_sequence()
                .and_then(|items| items.iter().find(|item| item["path"] == config_file))
                .map_or(config_file, |item| item["key"].as_str().unwrap());
            assert!(
                configmap["data"][key].is_string(),
                "{mode}: the ConfigMap holds {key}"
            );
        }
    }
}

#[test]
fn container_ports_probes_and_the_service_match_the_dockerfile_and_the_binary() {
    let proxy = port(DEFAULT_LISTEN);
    let admin = port(DEFAULT_ADMIN);
    for mode in MODES {
        let objects = rendered(mode);
        for (_, container) in tollgate_containers(&objects) {
            let http = Value::from("http");
            let admin_name = Value::from("admin");
            assert_eq!(
                container_port(container, &http),
                Some(proxy),
                "{mode}: port http"
            );
            assert_eq!(
                container_port(container, &admin_name),
                Some(admin),
                "{mode}: port admin"
            );
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{mode}: {probe}");
                assert_eq!(
                    container_port(container, &get["port"]),
                    Some(admin),
                    "{mode}: {probe} on the admin port"
                );
            }
        }
    }
    let objects = rendered("ingress");
    let service = named(&objects, "Service", "tollgate");
    let ports = service["spec"]["ports"].as_sequence().unwrap();
    let by_name = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("the Service has a port named {name}"))
    };
    assert_eq!(by_name("http")["port"].as_u64(), Some(u64::from(proxy)));
    assert_eq!(by_name("http")["targetPort"], "http");
    assert_eq!(by_name("https")["targetPort"], "https");
    assert_eq!(by_name("metrics")["port"].as_u64(), Some(u64::from(admin)));
    assert_eq!(by_name("metrics")["targetPort"], "admin");
    let monitor = &of_kind(&objects, "ServiceMonitor")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let deployment = &of_kind(&objects, "Deployment")[0];
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        admin.to_string().as_str()
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

/// The value each env of `container` would get from the example Secrets of `mode`
/// (`*.example.yaml`), by env name: the shape the deployer is told to give it.
fn example_secret_values(
    mode: &str,
    container: &Value,
) -> std::collections::BTreeMap<String, String> {
    let dir = root().join("deploy/kubernetes").join(mode);
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".example.yaml") {
            secrets.extend(
                documents(&read(&path))
                    .into_iter()
                    .filter(|o| o["kind"] == "Secret"),
            );
        }
    }
    let mut values = std::collections::BTreeMap::new();
    for env in container["env"].as_sequence().into_iter().flatten() {
        let reference = &env["valueFrom"]["secretKeyRef"];
        let (Some(name), Some(secret), Some(key)) = (
            env["name"].as_str(),
            reference["name"].as_str(),
            reference["key"].as_str(),
        ) else {
            continue;
        };
        let value = secrets
            .iter()
            .find(|s| s["metadata"]["name"] == secret)
            .and_then(|s| s["stringData"][key].as_str());
        if let Some(value) = value {
            values.insert(name.to_owned(), value.to_owned());
        }
    }
    values
}

/// Every `${env:NAME}` a config names.
fn env_references(text: &str) -> Vec<String> {
    text.split("${env:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The pod's volume that `mount` (a container's volume mount) names.
fn volume_of<'a>(pod: &'a Value, mount: &Value) -> &'a Value {
    pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {:?} in the pod", mount["name"]))
}

/// The Secret volumes mounted into the container: (mount path, Secret name). Mounted
/// whole, never by subPath, or a renewed certificate would not reach the pod.
fn secret_mounts(pod: &Value, container: &Value, mode: &str) -> Vec<(String, String)> {
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let volume = volume_of(pod, mount);
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            assert!(
                mount["subPath"].is_null(),
                "{mode}: Secret {secret} is mounted by subPath: its updates would not reach the pod"
            );
            let path = mount["mountPath"].as_str().unwrap();
            mounts.push((path.trim_end_matches('/').to_owned(), secret.to_owned()));
        }
    }
    mounts
}

/// `text` with every Secret mount path replaced by a directory holding what a
/// kubernetes.io/tls Secret holds (`tls.crt`, `tls.key`, `ca.crt`), made now.
fn with_tls_files(text: &str, mounts: &[(String, String)], dir: &Path) -> String {
    let pki = tollgate_standins::pki::Pki::new("deploy test CA");
    let mut text = text.to_owned();
    for (index, (path, _)) in mounts.iter().enumerate() {
        let files = dir.join(index.to_string());
        std::fs::create_dir_all(&files).unwrap();
        pki.write_tls_secret(&files);
        text = text.replace(&format!("{path}/"), &format!("{}/", files.display()));
    }
    text
}

/// The only test here that touches the environment (tests run on parallel threads).
#[test]
fn every_configmap_config_parses_and_listens_where_the_manifests_expect() {
    for mode in MODES {
        let objects = rendered(mode);
        let (pod, container) = tollgate_containers(&objects)[0];
        let set_from_secrets: BTreeSet<&str> = container["env"]
            .as_sequence()
            .map(|env| {
                env.iter()
                    .filter(|e| !e["valueFrom"]["secretKeyRef"].is_null())
                    .filter_map(|e| e["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let configmaps = of_kind(&objects, "ConfigMap");
        assert_eq!(configmaps.len(), 1, "{mode}: one ConfigMap");
        let text = configmaps[0]["data"]["tollgate.yaml"].as_str().unwrap();
        let examples = example_secret_values(mode, container);
        for name in env_references(text) {
            assert!(
                set_from_secrets.contains(name.as_str()),
                "{mode}: the config names ${{env:{name}}}; the container should set it from a Secret"
            );
            let value = examples
                .get(&name)
                .map_or("placeholder-value", String::as_str);
            std::env::set_var(&name, value);
        }
        // The TLS files the config names are in a Secret mount; tollgate reads them.
        let mounts = secret_mounts(pod, container, mode);
        let files = tempfile::tempdir().unwrap();
        let checked = with_tls_files(text, &mounts, files.path());
        let config = tollgate::config::parse(&checked)
            .unwrap_or_else(|errors| panic!("{mode}: the ConfigMap's tollgate.yaml:\n{errors}"));
        for listener in config.server.listen.iter().filter_map(|l| l.tls.as_ref()) {
            assert!(
                listener.cert_file.starts_with(files.path())
                    && listener.key_file.starts_with(files.path()),
                "{mode}: {listener:?} should be in a Secret mount"
            );
        }
        assert_eq!(
            config.server.admin,
            SocketAddr::from(([0, 0, 0, 0], port(DEFAULT_ADMIN))),
            "{mode}: the admin listener must be on the pod IP for the probes and Prometheus"
        );
        let listen_ports: Vec<u16> = config
            .server
            .listen
            .iter()
            .map(|listener| listener.address.port())
            .collect();
        let expected: Vec<u16> = match mode {
            // Plain HTTP, and TLS (with HTTP/2) on the port named https.
            "ingress" => vec![
                port(DEFAULT_LISTEN),
                container_port(container, &Value::from("https")).unwrap(),
            ],
            _ => vec![port(DEFAULT_LISTEN)],
        };
        assert_eq!(listen_ports, expected, "{mode}");
        let tls: Vec<bool> = config
            .server
            .listen
            .iter()
            .map(|l| l.tls.is_some())
            .collect();
        assert_eq!(
            tls,
            expected
                .iter()
                .map(|&p| p != port(DEFAULT_LISTEN))
                .collect::<Vec<_>>(),
            "{mode}"
        );
        let loopback = config
            .server
            .listen
            .iter()
            .all(|listener| listener.address.ip().is_loopback());
        match mode {
            "sidecar" => assert!(loopback, "the sidecar listens on loopback only"),
            _ => assert!(!loopback, "the ingress listens on the pod IP"),
        }
    }
}

#[test]
fn the_ingress_has_replicas_an_hpa_a_pdb_and_a_network_policy() {
    let objects = rendered("ingress");
    let deployment = named(&objects, "Deployment", "tollgate");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let hpa = &of_kind(&objects, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "tollgate");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    let pdb = &of_kind(&objects, "PodDisruptionBudget")[0];
    assert_eq!(pdb["apiVersion"], "policy/v1");
    let policy = &of_kind(&objects, "NetworkPolicy")[0];
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    let metrics_rule = rules
        .iter()
        .find(|rule| rule["ports"][0]["port"].as_u64() == Some(u64::from(port(DEFAULT_ADMIN))))
        .expect("a rule for the admin port");
    assert_eq!(
        metrics_rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring",
        "only the monitoring namespace reaches the admin port"
    );
    assert!(
        objects.iter().all(|o| o["kind"] != "Secret"),
        "no Secret in the kustomization: the credentials are the user's (secret.example.yaml)"
    );
}
