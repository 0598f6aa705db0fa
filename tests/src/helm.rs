//! helm (built by `hack/build-helm.sh`, or `$HELM`) and Ferrovirt's chart
//! (`deploy/helm/ferrovirt`), for the tests that lint, render or install it.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml::Value;

/// The control plane's Kubernetes version, which `helm template` and `helm lint` are told.
pub use crate::assets::KUBE_VERSION;
use crate::assets::cache_dir;

/// The helm that `hack/build-helm.sh` builds.
pub const HELM_VERSION: &str = "3.22.0";

/// The helm binary; panics saying how to build it when it is missing.
pub fn helm() -> PathBuf {
    let path = match std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => cache_dir()
            .join(format!("helm-v{HELM_VERSION}"))
            .join("helm"),
    };
    assert!(
        path.is_file(),
        "helm not found at {}: run hack/build-helm.sh (or set HELM to a helm v3 binary)",
        path.display()
    );
    path
}

/// The chart's directory.
pub fn chart() -> PathBuf {
    crate::repo_root().join("deploy/helm/ferrovirt")
}

/// Runs helm with `args`; (success, stdout, stderr without helm's symbolic-link notes:
/// the chart links its CRDs, policies and roles to their one source).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm())
        .args(args)
        .output()
        .expect("running helm");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("found symbolic link in path"))
        .collect::<Vec<_>>()
        .join("\n");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// `helm template ferrovirt <chart> -n <namespace> --kube-version <the control plane's>
/// <extra>`: (success, stdout, stderr). Without the version helm assumes v1.20, and the
/// chart needs 1.30 or newer.
pub fn try_template(namespace: &str, extra: &[&str]) -> (bool, String, String) {
    let chart = chart();
    let mut args = vec![
        "template",
        "ferrovirt",
        chart.to_str().expect("a UTF-8 path"),
        "-n",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// [`try_template`]'s output; panics with helm's message when it fails.
pub fn template(namespace: &str, extra: &[&str]) -> String {
    let (ok, stdout, stderr) = try_template(namespace, extra);
    assert!(ok, "helm template {extra:?} failed:\n{stderr}");
    stdout
}

/// The YAML documents of a multi-document text, empty ones left out.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("helm rendered valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// A document's kind and name.
pub fn kind_name(doc: &Value) -> (String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&doc["kind"]), s(&doc["metadata"]["name"]))
}

/// The rendered object of this kind and name; panics when there is none.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"))
}

/// Ferrovirt's four images, by their chart values' `repository` (`ferrovirt/<name>`).
pub const IMAGES: &[&str] = &[
    "virt-controller",
    "virt-api",
    "virt-handler",
    "virt-launcher",
];

/// The OCI image layout of one of [`IMAGES`] that `hack/build-images.sh` writes into
/// `$FERROVIRT_CACHE/image-build/oci/<name>` (also with `--no-push`); panics saying how to
/// make it when it is missing.
pub fn image_layout(name: &str) -> PathBuf {
    let layout = cache_dir().join("image-build/oci").join(name);
    assert!(
        layout.join("index.json").is_file(),
        "the {name} image is missing at {}: build the images with \
         `hack/build-images.sh --no-push --no-guests` (hack/setup.sh does)",
        layout.display()
    );
    layout
}

/// The `org.opencontainers.image.revision` label of an image layout (the commit its
/// binaries were built from), if it has one.
pub fn image_revision(layout: &std::path::Path) -> Option<String> {
    let json = |path: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str()?.strip_prefix("sha256:")?;
        json(layout.join("blobs/sha256").join(digest))
    };
    let index = json(layout.join("index.json"))?;
    let manifest = blob(&index["manifests"][0]["digest"])?;
    let config = blob(&manifest["config"]["digest"])?;
    config["config"]["Labels"]["org.opencontainers.image.revision"]
        .as_str()
        .map(str::to_string)
}
