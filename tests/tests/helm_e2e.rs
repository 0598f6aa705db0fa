//! Ferrovirt installed as a user installs it: its four images pushed to the real node's
//! registry (hack/node/, docs/real-node.md), then `helm install` of deploy/helm/ferrovirt
//! into a control plane that has none of Ferrovirt yet (no CRDs, no policies), KubeVirt's
//! vm-cirros.yaml booted from its containerDisk with its console answering through virtctl,
//! `helm upgrade` to another tag (the guest keeps its launcher pod and its boot id), the VM
//! deleted, `helm uninstall`. One test: every step needs the one before.
//!
//! The images are the OCI layouts `hack/build-images.sh` wrote last (hack/setup.sh runs it;
//! after changing code, run `hack/build-images.sh --no-push --no-guests`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::pod::COMPUTE_CONTAINER;
use ferrovirt_tests::aggregation::{virtctl, virtctl_path};
use ferrovirt_tests::console::Client as Console;
use ferrovirt_tests::helm::{self, IMAGES, image_layout, image_revision};
use ferrovirt_tests::node::RealNode;
use ferrovirt_tests::wait::eventually_or;
use ferrovirt_tests::{ControlPlane, TestNamespace, examples_dir, shared_bare};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

const RELEASE: &str = "ferrovirt";
const NAMESPACE: &str = "kubevirt";
/// Two tags of the same images: the upgrade changes every pod template, as a new release
/// of the images would.
const INSTALL_TAG: &str = "e2e-install";
const UPGRADE_TAG: &str = "e2e-upgrade";
/// Pulls of ~200 MiB of layers into the node, then starts, on a loaded 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(300);
/// The pods of a release: component label value and how many.
const COMPONENTS: &[(&str, usize)] =
    &[("virt-controller", 2), ("virt-api", 2), ("virt-handler", 1)];
const KVM_RESOURCE: &str = "devices.kubevirt.io/kvm";
/// The containerDisk vm-cirros.yaml names; the node's containerd mirrors `registry:5000`
/// to its own registry, path unchanged (docs/real-node.md).
const CIRROS_REF: &str = "registry:5000/kubevirt/cirros-container-disk-demo:devel";

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_on_the_real_node() {
    let cp = shared_bare().await;
    let node = RealNode::start(cp)
        .await
        .unwrap_or_else(|e| panic!("starting the real node: {e}"));
    let client = cp.client().await.unwrap();
    push_images(&node).await;

    // Install, as the chart's README says, with the node's registry and emulation (KVM
    // does not work on these machines).
    let registry = format!("image.registry={}", node.registry());
    let started = Instant::now();
    helm_ok(
        cp,
        &[
            "install",
            RELEASE,
            helm::chart().to_str().unwrap(),
            "-n",
            NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout=5m",
            "--set",
            &registry,
            "--set",
            &format!("image.tag={INSTALL_TAG}"),
            "--set",
            "emulation=true",
        ],
    );
    let installed = all_ready(&client, &node, INSTALL_TAG).await;
    let ready_after = started.elapsed();

    // virt-controller: one of the two replicas leads.
    let lease = Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .get("virt-controller")
        .await
        .expect("virt-controller's Lease");
    let holder = lease.spec.and_then(|s| s.holder_identity);
    let controllers: Vec<&String> = installed
        .iter()
        .filter(|(_, (c, _))| c == "virt-controller")
        .map(|(name, _)| name)
        .collect();
    assert!(
        holder.as_ref().is_some_and(|h| controllers.contains(&h)),
        "the Lease is held by {holder:?}, not by a virt-controller pod of {controllers:?}"
    );

    // virt-handler's device plugin registered with the node's kubelet.
    let nodes: Api<Node> = Api::all(client.clone());
    wait(
        &format!("{KVM_RESOURCE} allocatable on the node"),
        || async {
            let n = nodes.get(node.name()).await.map_err(|e| e.to_string())?;
            let alloc = n.status.and_then(|s| s.allocatable).unwrap_or_default();
            match alloc.get(KVM_RESOURCE) {
                Some(q) if q.0 != "0" => Ok(()),
                other => Err(format!("allocatable {KVM_RESOURCE}: {other:?}")),
            }
        },
    )
    .await;

    // The handler's init container filled the node's QEMU capabilities cache with the
    // launcher's image before any VM.
    let warmed = cp
        .kubectl([
            "logs",
            "-n",
            NAMESPACE,
            "daemonset/virt-handler",
            "-c",
            "warm-capabilities",
        ])
        .await
        .unwrap()
        .expect_success()
        .to_string();
    assert!(
        warmed.contains("QEMU capabilities cached"),
        "virt-handler's warm-capabilities init container: {warmed}"
    );

    // The aggregated API through the Service and the node's kube-proxy: KubeVirt's virtctl.
    apiservice_available(cp, &node).await;
    report_memory(&node, ready_after);
    virt_api_replicas_share_one_certificate(&client).await;

    // KubeVirt's vm-cirros.yaml, unchanged but for runStrategy Always: its containerDisk
    // pulled by the node as a container of the launcher pod, the guest booted, its console
    // reached with virtctl.
    let vms = TestNamespace::create(cp, "vms").await.unwrap();
    let (launcher, boot) = boot_vm_cirros(cp, &node, &vms).await;

    // Upgrade to another tag: every pod is replaced and Ready again, the API still served.
    helm_ok(
        cp,
        &[
            "upgrade",
            RELEASE,
            helm::chart().to_str().unwrap(),
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--wait",
            "--timeout=5m",
            "--set",
            &format!("image.tag={UPGRADE_TAG}"),
        ],
    );
    let upgraded = all_ready(&client, &node, UPGRADE_TAG).await;
    let old: BTreeSet<&String> = installed.keys().collect();
    let kept: Vec<&String> = upgraded.keys().filter(|p| old.contains(p)).collect();
    assert!(kept.is_empty(), "helm upgrade left pods {kept:?} in place");
    apiservice_available(cp, &node).await;
    // The guest kept running through the upgrade: the same launcher pod, the same boot.
    let pods_of_vms: Api<Pod> = Api::namespaced(client.clone(), vms.name());
    let after = launcher_pod(&pods_of_vms).await;
    assert_eq!(
        after.uid(),
        launcher.uid(),
        "helm upgrade replaced the launcher pod"
    );
    assert_eq!(
        boot_id(cp, vms.name()).await,
        boot,
        "the guest rebooted during helm upgrade"
    );

    // VMs first, while Ferrovirt runs (the chart's README): then nothing is left to run.
    cp.kubectl(["delete", "vm", "vm-cirros", "-n", vms.name(), "--wait"])
        .await
        .unwrap()
        .expect_success();
    wait("the launcher pod gone", || async {
        let left = pods_of_vms
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        match left.items.len() {
            0 => Ok(()),
            n => Err(format!("{n} pods left")),
        }
    })
    .await;

    // Uninstall: no pod, APIService, webhook configuration or process of Ferrovirt left.
    helm_ok(
        cp,
        &[
            "uninstall",
            RELEASE,
            "-n",
            NAMESPACE,
            "--wait",
            "--timeout=5m",
        ],
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait("no pod left in the release namespace", || async {
        let left = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = left.items.iter().map(|p| p.name_any()).collect();
        if names.is_empty() {
            Ok(())
        } else {
            Err(format!("pods {names:?}"))
        }
    })
    .await;
    wait("no process left in the node's pods", || async {
        let left = node.pod_processes();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    let left = cp
        .kubectl([
            "get",
            "all,secrets,leases,configmaps",
            "-n",
            NAMESPACE,
            "-o",
            "name",
        ])
        .await
        .unwrap();
    println!(
        "left in namespace {NAMESPACE} after helm uninstall (not the chart's objects):\n{}",
        left.expect_success().trim_end()
    );
    for kind in [
        "apiservice/v1.subresources.kubevirt.io",
        "apiservice/v1alpha3.subresources.kubevirt.io",
        "mutatingwebhookconfiguration/virt-api-mutator",
        "validatingwebhookconfiguration/virt-api-validator",
    ] {
        let out = cp.kubectl(["get", kind]).await.unwrap();
        assert!(
            !out.success() && out.stderr.contains("NotFound"),
            "{kind} is still there after helm uninstall:\n{out}"
        );
    }
}

/// Pushes the four images to the node's registry under both tags.
async fn push_images(node: &RealNode) {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(ferrovirt_tests::repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for image in IMAGES {
        let layout = image_layout(image);
        let revision = image_revision(&layout).unwrap_or_default();
        if revision != head {
            tracing::warn!(
                image,
                revision,
                head,
                "the image was built from another commit: hack/build-images.sh --no-push \
                 --no-guests builds the current one"
            );
        }
        for tag in [INSTALL_TAG, UPGRADE_TAG] {
            node.push(&layout, &format!("ferrovirt/{image}:{tag}"))
                .await
                .unwrap_or_else(|e| panic!("pushing {image}: {e}"));
        }
    }
}

/// Waits until the release's pods are exactly [`COMPONENTS`], all Ready, on the node,
/// from images of `tag`; returns them (name → (component, uid)).
async fn all_ready(
    client: &Client,
    node: &RealNode,
    tag: &str,
) -> BTreeMap<String, (String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait(
        &format!("every Ferrovirt pod Ready with tag {tag}"),
        || async {
            let list = pods
                .list(&ListParams::default().labels("kubevirt.io"))
                .await
                .map_err(|e| e.to_string())?;
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            let mut ready = BTreeMap::new();
            for pod in &list.items {
                let component = pod.labels()["kubevirt.io"].clone();
                let spec = pod.spec.as_ref().expect("a pod spec");
                let image = &spec.containers[0].image.clone().unwrap_or_default();
                let is_ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let up = is_ready
                    && image.ends_with(&format!(":{tag}"))
                    && image.starts_with(node.registry())
                    && spec.node_name.as_deref() == Some(node.name())
                    && pod.metadata.deletion_timestamp.is_none();
                if !up {
                    return Err(format!("{} not up yet: {:?}", pod.name_any(), pod.status));
                }
                *count.entry(component.clone()).or_default() += 1;
                ready.insert(pod.name_any(), (component, pod.uid().unwrap_or_default()));
            }
            let want: BTreeMap<String, usize> = COMPONENTS
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect();
            if count != want {
                return Err(format!("pods per component {count:?}, want {want:?}"));
            }
            Ok(ready)
        },
    )
    .await
}

/// Both APIServices Available, and KubeVirt's virtctl gets virt-api's version through
/// the aggregator (which dials the Service's ClusterIP, served by the node's kube-proxy).
async fn apiservice_available(cp: &ControlPlane, node: &RealNode) {
    let out = cp
        .kubectl([
            "wait",
            "--for=condition=Available",
            "--timeout=120s",
            "apiservice/v1.subresources.kubevirt.io",
            "apiservice/v1alpha3.subresources.kubevirt.io",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}\n{}", node.log_tails(10));
    let out = virtctl(&cp.kubeconfig(), &["version"]).await.unwrap();
    assert!(
        out.expect_success()
            .contains("Server Version: version.Info{GitVersion:\"v"),
        "{out}"
    );
}

/// Both virt-api replicas serve the certificate kept in the Secret `kubevirt-virt-api-certs`,
/// whose CA is the APIServices' caBundle: each pod's certificate is read at its address (an
/// address inside the node's namespaces) and compared.
async fn virt_api_replicas_share_one_certificate(client: &Client) {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    let secret = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get("kubevirt-virt-api-certs")
        .await
        .expect("virt-api's shared serving certificate Secret");
    let data = secret.data.expect("the Secret's data");
    let text = |key: &str| String::from_utf8(data[key].0.clone()).expect("PEM");
    let (ca, cert) = (text("ca.crt"), text("tls.crt"));
    let bundle = Api::<APIService>::all(client.clone())
        .get("v1.subresources.kubevirt.io")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.ca_bundle)
        .expect("a caBundle");
    assert_eq!(
        String::from_utf8_lossy(&bundle.0),
        ca,
        "the caBundle is not the Secret's CA"
    );
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels("kubevirt.io=virt-api"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2, "virt-api pods: {pods:?}");
    let body = |pem: &str| -> String {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    for pod in pods {
        let ip = pod.status.and_then(|s| s.pod_ip).expect("a pod IP");
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("{ip}:8443")])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running openssl s_client");
        let served = String::from_utf8_lossy(&out.stdout);
        let served = served
            .split("-----BEGIN CERTIFICATE-----")
            .nth(1)
            .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
            .unwrap_or_else(|| panic!("no certificate from {ip}:8443: {served}"));
        assert_eq!(
            body(served),
            body(&cert),
            "virt-api pod {} at {ip} serves a certificate other than the shared one",
            pod.metadata.name.unwrap_or_default()
        );
    }
}

/// Prints the figures: install to Ready, and resident memory of the node's components
/// beside Ferrovirt's pods.
fn report_memory(node: &RealNode, ready_after: Duration) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut lines = vec![format!(
        "helm install to every Ferrovirt pod Ready: {:.1} s",
        ready_after.as_secs_f64()
    )];
    for component in ["containerd", "kubelet", "kube-proxy"] {
        let rss = node
            .pid(component)
            .and_then(ferrovirt_tests::node::NodeProcess::read)
            .map_or(0, |p| p.rss_kib);
        lines.push(format!("RSS {component}: {:.0} MiB", mib(rss)));
    }
    let mut pods: Vec<_> = node
        .pod_processes()
        .into_iter()
        .filter(|p| p.comm.starts_with("virt-"))
        .collect();
    pods.sort_by(|a, b| a.comm.cmp(&b.comm));
    for p in pods {
        lines.push(format!(
            "RSS {} (pid {}): {:.0} MiB",
            p.comm,
            p.pid,
            mib(p.rss_kib)
        ));
    }
    println!("{}", lines.join("\n"));
}

/// Runs helm with the control plane's kubeconfig; panics with its output on failure.
fn helm_ok(cp: &ControlPlane, args: &[&str]) {
    let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig().display());
    let mut all = args.to_vec();
    all.push(&kubeconfig);
    let started = Instant::now();
    let (ok, stdout, stderr) = helm::run(&all);
    assert!(ok, "helm {args:?} failed:\n{stdout}\n{stderr}");
    tracing::info!(
        command = args[0],
        elapsed_ms = started.elapsed().as_millis() as u64,
        "helm returned"
    );
}

/// Polls `check` until it succeeds ([`eventually_or`]); after [`TIMEOUT`] panics with
/// its last answer.
async fn wait<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let last = RefCell::new(String::new());
    let attempt = || {
        let answer = check();
        let last = &last;
        async move { answer.await.map_err(|e| *last.borrow_mut() = e).ok() }
    };
    eventually_or(what, TIMEOUT, attempt, || last.take()).await
}

/// Applies vm-cirros.yaml with runStrategy Always in `ns` and waits until its guest answers
/// on the console; returns the launcher pod and the guest's boot id.
async fn boot_vm_cirros(cp: &ControlPlane, node: &RealNode, ns: &TestNamespace) -> (Pod, String) {
    let layout = image_layout(&format!("guest-{}", CIRROS_REF.replace(['/', ':'], "_")));
    let path = CIRROS_REF.split_once('/').expect("a registry host").1;
    node.push(&layout, path)
        .await
        .unwrap_or_else(|e| panic!("pushing the cirros containerDisk: {e}"));
    let cirros = examples_dir().join("vm-cirros.yaml");
    let applied = Instant::now();
    cp.kubectl(["apply", "-n", ns.name(), "-f", cirros.to_str().unwrap()])
        .await
        .unwrap()
        .expect_success();
    cp.kubectl([
        "patch",
        "vm",
        "vm-cirros",
        "-n",
        ns.name(),
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
    ])
    .await
    .unwrap()
    .expect_success();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(cp.client().await.unwrap(), ns.name());
    wait("VMI vm-cirros Running", || async {
        let vmi = vmis.get_opt("vm-cirros").await.map_err(|e| e.to_string())?;
        let status = vmi.and_then(|v| v.status);
        match status.as_ref().and_then(|s| s.phase) {
            Some(VmiPhase::Running) => Ok(()),
            _ => Err(format!(
                "{status:?}\n{}\n{}",
                cp.kubectl(["get", "events", "-n", ns.name()])
                    .await
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                cp.kubectl([
                    "logs",
                    "-n",
                    NAMESPACE,
                    "daemonset/virt-handler",
                    "--tail=30"
                ])
                .await
                .map(|o| o.to_string())
                .unwrap_or_default(),
            )),
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cp.client().await.unwrap(), ns.name());
    let pod = launcher_pod(&pods).await;
    let boot = boot_id(cp, ns.name()).await;
    // For the report: what the node's first VM waited for libvirt's capabilities (about
    // 4 s without the cache the init container filled).
    let log = cp
        .kubectl([
            "logs",
            "-n",
            ns.name(),
            &pod.name_any(),
            "-c",
            COMPUTE_CONTAINER,
        ])
        .await
        .map(|o| o.stdout)
        .unwrap_or_default();
    if let Some(line) = log.lines().find(|l| l.contains("QEMU capabilities ready")) {
        println!("vm-cirros's launcher: {line}");
    }
    println!(
        "vm-cirros: kubectl apply to its console answering through virtctl: {:.1} s",
        applied.elapsed().as_secs_f64()
    );
    (pod, boot)
}

/// The one launcher pod of namespace `pods`.
async fn launcher_pod(pods: &Api<Pod>) -> Pod {
    let mut list = pods
        .list(&ListParams::default().labels("kubevirt.io=virt-launcher"))
        .await
        .unwrap()
        .items;
    assert_eq!(list.len(), 1, "launcher pods: {list:?}");
    list.remove(0)
}

/// The guest's `/proc/sys/kernel/random/boot_id`, read on its serial console through
/// KubeVirt's virtctl (virt-api, then virt-handler).
async fn boot_id(cp: &ControlPlane, ns: &str) -> String {
    const MARK: &str = "BOOTID=";
    let mut console = Console::spawn(
        &virtctl_path(),
        &cp.kubeconfig(),
        &["-n", ns, "console", "vm-cirros"],
    )
    .unwrap();
    // The terminal echoes `BOOT""ID=`, so only the answer holds MARK.
    let id = wait("the boot id on vm-cirros's console", || {
        let sent = console.send(b"echo BOOT\"\"ID=$(cat /proc/sys/kernel/random/boot_id)\n");
        let out = console.stdout();
        async move {
            sent.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            out.split(MARK)
                .nth(1)
                .map(|rest| rest.chars().take(36).collect::<String>())
                .filter(|id| {
                    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                })
                .ok_or(out)
        }
    })
    .await;
    let _ = console.send(b"\x1d");
    let _ = console.exit(Duration::from_secs(10)).await;
    id
}
