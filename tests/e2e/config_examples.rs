//! Every example in config/ passes `tollgate check`, with each `${env:NAME}` it names set
//! to a placeholder, the way a deployment would provide it, and the TLS files it names
//! under `/etc/tls/` (a Kubernetes TLS Secret's mount) made for the check. Each is checked
//! as a copy beside those files, with config/'s folders linked in for its relative imports.

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate_standins::pki::Pki;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

/// Where the examples mount a TLS Secret (`tls.crt`, `tls.key`, `ca.crt`).
const TLS_MOUNT: &str = "/etc/tls/";

/// `text` with the TLS mount replaced by a directory holding a certificate, its key and
/// its CA, made now.
fn with_tls_files(text: &str, dir: &Path) -> String {
    if !text.contains(TLS_MOUNT) {
        return text.to_owned();
    }
    Pki::new("example CA").write_tls_secret(dir);
    text.replace(TLS_MOUNT, &format!("{}/", dir.display()))
}

/// Links each folder of config/ into `dir`, so that the files an example names relative to
/// itself (`mcp.import`: capabilities/, openapi/) are found from its copy there.
fn link_config_folders(dir: &Path) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(&config).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            let name = path.file_name().expect("a folder has a name");
            std::os::unix::fs::symlink(&path, dir.join(name)).expect("link a config folder");
        }
    }
}

fn env_references(text: &str) -> Vec<String> {
    text.split("${env:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn every_example_config_passes_check() {
    let files = examples();
    assert!(
        files.len() >= 3,
        "expected the demo, oauth2 and bigid examples, found {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable example");
        let dir = tempfile::tempdir().expect("tempdir");
        let checked = dir.path().join("tollgate.yaml");
        std::fs::write(&checked, with_tls_files(&text, dir.path())).expect("write config");
        link_config_folders(dir.path());
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command.arg("check").arg("--config").arg(&checked);
        for name in env_references(&text) {
            // Each variable gets a value of the shape its key wants: a store URL, a store
            // key (32 bytes, base64), another URL (a Naftiko capability's base URI).
            let value = if name.ends_with("_STORE_URL") {
                "redis://127.0.0.1:6379/0".to_owned()
            } else if name.ends_with("_STORE_KEY") {
                "UkVQTEFDRS1XSVRILTMyLVJBTkRPTS1CWVRFUyEhISE=".to_owned()
            } else if name.ends_with("_URL") {
                format!(
                    "https://placeholder-for-{}.example",
                    name.to_ascii_lowercase()
                )
            } else {
                format!("placeholder-value-for-{name}")
            };
            command.env(name, value);
        }
        let output = command.output().expect("tollgate runs");
        assert!(
            output.status.success(),
            "{} fails `tollgate check`:\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(": OK"),
            "no summary for {}: {stdout}",
            file.display()
        );
    }
}

#[test]
fn an_example_without_its_secrets_names_the_missing_variable() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bigid.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(&file)
        .env_remove("BIGID_USER_TOKEN")
        .env_remove("BIGID_PASSWORD")
        .output()
        .expect("tollgate runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("providers.bigid.user_token: env BIGID_USER_TOKEN is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("providers.bigid-user.password: env BIGID_PASSWORD is not set"),
        "{stderr}"
    );
}
