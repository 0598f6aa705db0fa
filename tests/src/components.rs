//! The one place that knows how each control-plane component is started: its flags, and
//! the files it reads. Tests and `ferrovirt-local` both start exactly this.

use std::path::{Path, PathBuf};

use crate::Assets;
use crate::pki::{FRONT_PROXY_CLIENT, Pki, SERVICE_CIDR};

/// Controllers the controller manager runs: garbage collection (owner references), namespace
/// deletion, service accounts and their tokens, and the `kube-root-ca.crt` ConfigMap that
/// service-account volumes need. Add here what later components rely on.
pub const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    // Writes status.typeChecking of ValidatingAdmissionPolicies, which the harness checks.
    "validatingadmissionpolicy-status-controller",
    // Folds ClusterRoles labelled aggregate-to-admin/edit/view (KubeVirt's kubevirt.io:*
    // roles in deploy/rbac) into the built-in admin, edit and view, as in a real cluster.
    "clusterrole-aggregation-controller",
    // EndpointSlices of Services with selectors: kube-proxy on the real node (hack/node/)
    // programs Services from them.
    "endpointslice-controller",
    // What a `helm install` of Ferrovirt's chart on the real node needs (tests/tests/
    // helm_e2e.rs): Deployments make ReplicaSets, ReplicaSets and DaemonSets make pods,
    // PodDisruptionBudgets get their status. Each acts only on objects of its kind, which
    // the other tests do not create. (The aggregator finds an APIService's Service through
    // its EndpointSlices, so no Endpoints controller.)
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "disruption-controller",
    // Claims bound to volumes as in a cluster: KubeVirt's backend-storage claims are made
    // by virt-controller with a generated name, so no test can pre-bind them; the
    // protection controllers let a deleted claim (and volume) go once nothing uses it.
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
];

/// The issuer of service-account tokens, as in a kubeadm cluster.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Loopback ports of one control plane.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
}

impl Ports {
    /// Ports that were free a moment ago on 127.0.0.1.
    pub fn free() -> std::io::Result<Self> {
        // Hold all three listeners at once so the kernel hands out distinct ports.
        let listeners = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(Self {
            etcd_client: port(0)?,
            etcd_peer: port(1)?,
            apiserver: port(2)?,
        })
    }
}

/// Where a control plane keeps its files.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }
    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }
    /// The admin kubeconfig (group system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    /// The kubeconfig of a component that has its own client certificate.
    pub fn component_kubeconfig(&self, component: &str) -> PathBuf {
        self.root
            .join("kubeconfigs")
            .join(format!("{component}.kubeconfig"))
    }
    pub fn kubectl_cache(&self) -> PathBuf {
        self.root.join("kubectl-cache")
    }
}

/// One component to start: a name (also its log and pid file name), program and arguments.
#[derive(Clone, Debug)]
pub struct Component {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// The components in start order.
pub fn components(assets: &Assets, layout: &Layout, pki: &Pki, ports: Ports) -> Vec<Component> {
    let p = |path: PathBuf| path.display().to_string();
    let etcd_client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let etcd_peer = format!("http://127.0.0.1:{}", ports.etcd_peer);

    let etcd = vec![
        "--name=default".to_string(),
        format!("--data-dir={}", p(layout.etcd_data())),
        format!("--listen-client-urls={etcd_client}"),
        format!("--advertise-client-urls={etcd_client}"),
        format!("--listen-peer-urls={etcd_peer}"),
        format!("--initial-advertise-peer-urls={etcd_peer}"),
        format!("--initial-cluster=default={etcd_peer}"),
        // A throwaway single-member cluster: durability is not worth the fsyncs.
        "--unsafe-no-fsync=true".to_string(),
        "--log-level=warn".to_string(),
    ];

    let apiserver = vec![
        format!("--etcd-servers={etcd_client}"),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        format!("--secure-port={}", ports.apiserver),
        format!("--tls-cert-file={}", p(pki.cert("apiserver"))),
        format!("--tls-private-key-file={}", p(pki.key("apiserver"))),
        format!("--client-ca-file={}", p(pki.cert("ca"))),
        format!("--service-account-key-file={}", p(pki.dir().join("sa.pub"))),
        format!(
            "--service-account-signing-key-file={}",
            p(pki.dir().join("sa.key"))
        ),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".to_string(),
        "--allow-privileged=true".to_string(),
        // This plugin taints every new Node `not-ready:NoSchedule` until the node lifecycle
        // controller, which is not run here, sees it Ready: nodes that tests or devnode
        // create would never get pods.
        "--disable-admission-plugins=TaintNodesByCondition".to_string(),
        // Aggregation: the API server authenticates to aggregated servers (virt-api) with
        // the front-proxy client certificate and passes the user in these headers.
        format!(
            "--requestheader-client-ca-file={}",
            p(pki.cert("front-proxy-ca"))
        ),
        format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
        "--requestheader-username-headers=X-Remote-User".to_string(),
        "--requestheader-group-headers=X-Remote-Group".to_string(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
        format!(
            "--proxy-client-cert-file={}",
            p(pki.cert(FRONT_PROXY_CLIENT))
        ),
        format!("--proxy-client-key-file={}", p(pki.key(FRONT_PROXY_CLIENT))),
        // Cluster routing: an APIService's Service of type ExternalName is dialed at
        // `<externalName>:<port>` (proxy.ResolveCluster), so virt-api on a loopback port
        // behind `externalName: localhost` needs no kube-proxy. Endpoint routing refuses
        // ExternalName Services and its EndpointSlices may not hold loopback addresses.
        "--enable-aggregator-routing=false".to_string(),
        // The `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints reject;
        // nothing in the cluster reaches the API server through that Service here.
        "--endpoint-reconciler-type=none".to_string(),
        // Reach kubelets (logs, exec) at their node IP, never by resolving the node's name:
        // a DNS lookup would leave the machine.
        "--kubelet-preferred-address-types=InternalIP".to_string(),
        format!("--cert-dir={}", p(layout.root().join("apiserver-certs"))),
        "--profiling=false".to_string(),
    ];

    let controller_manager = vec![
        format!(
            "--kubeconfig={}",
            p(layout.component_kubeconfig("kube-controller-manager"))
        ),
        format!("--controllers={}", CONTROLLERS.join(",")),
        format!(
            "--service-account-private-key-file={}",
            p(pki.dir().join("sa.key"))
        ),
        format!("--root-ca-file={}", p(pki.cert("ca"))),
        // Each controller acts as its own service account with its bootstrap role, as in
        // kubeadm; the controller manager's own user may not, e.g., write ConfigMaps.
        "--use-service-account-credentials=true".to_string(),
        "--leader-elect=false".to_string(),
        // Nothing scrapes its metrics or health here: no listener, no port to collide.
        "--secure-port=0".to_string(),
        "--profiling=false".to_string(),
    ];

    let scheduler = vec![
        format!(
            "--kubeconfig={}",
            p(layout.component_kubeconfig("kube-scheduler"))
        ),
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
        "--profiling=false".to_string(),
    ];

    vec![
        Component {
            name: "etcd",
            program: assets.bin("etcd"),
            args: etcd,
        },
        Component {
            name: "kube-apiserver",
            program: assets.bin("kube-apiserver"),
            args: apiserver,
        },
        Component {
            name: "kube-controller-manager",
            program: assets.bin("kube-controller-manager"),
            args: controller_manager,
        },
        Component {
            name: "kube-scheduler",
            program: assets.bin("kube-scheduler"),
            args: scheduler,
        },
    ]
}

/// A kubeconfig for `server` that authenticates with the client certificate `<user>`.
pub fn kubeconfig(server: &str, pki: &Pki, user: &str) -> String {
    let ca = pki.cert("ca");
    let cert = pki.cert(user);
    let key = pki.key(user);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferrovirt
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: ferrovirt
  context:
    cluster: ferrovirt
    user: {user}
current-context: ferrovirt
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}
