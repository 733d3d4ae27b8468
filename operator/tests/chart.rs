//! The Helm chart, rendered by the real Helm engine and validated against the Kubernetes
//! 1.30 schemas (`e2e/chart/check_chart.py`). The test installs its Python tools
//! (`helm-python-sdk`, `kubernetes-validate`) with pip when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrocket_operator::builders::BuildConfig;

const PY_PACKAGES: &[&str] = &[
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "PyYAML>=6",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn have_tools() -> bool {
    Command::new(python())
        .args(["-c", "import helm_python, kubernetes_validate, yaml"])
        .current_dir(std::env::temp_dir())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn install_tools() {
    if have_tools() {
        return;
    }
    let out = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PY_PACKAGES)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pip install {PY_PACKAGES:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        have_tools(),
        "the chart tools are still missing after pip install"
    );
}

#[test]
fn chart_lints_renders_and_validates_against_kubernetes_schemas() {
    install_tools();
    let dir = tempfile::tempdir().unwrap();
    let perms = dir.path().join("permissions.json");
    std::fs::write(&perms, ferrocket_operator::rbac::permissions_json()).unwrap();
    let samples: String = [
        "nameserver.yaml",
        "nameserver-acl.yaml",
        "broker-group.yaml",
        "broker-group-raft.yaml",
        "broker-group-acl.yaml",
        "broker-group-acl2.yaml",
        "broker-group-tls.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root().join("samples").join(f)).unwrap())
    .collect();
    let rendered = ferrocket_operator::render::render(&samples, &BuildConfig::default()).unwrap();
    let rendered_file = dir.path().join("rendered.yaml");
    std::fs::write(&rendered_file, rendered).unwrap();
    let out = Command::new(python())
        .arg(root().join("e2e/chart/check_chart.py"))
        .arg(root().join("charts/ferrocket"))
        .arg(root().join("crds/ferrocket.io.yaml"))
        .arg(&perms)
        .arg(&rendered_file)
        // Not the repository root: a local `helm_python`/`logging` must not shadow imports.
        .current_dir(dir.path())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("chart check ok"), "{stdout}");
}
