//! The device plugins against the kubelet's side of the protocol, over real unix sockets:
//! a gRPC Registration server on a temporary `kubelet.sock` that, like the kubelet, dials
//! the plugin during `Register`, and a gRPC client that calls the plugin's ListAndWatch and
//! Allocate. The device nodes are files in a temporary "host root".

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrovirt_device_plugin::api::device_plugin_client::DevicePluginClient;
use ferrovirt_device_plugin::api::registration_server::{Registration, RegistrationServer};
use ferrovirt_device_plugin::api::{self, ListAndWatchResponse, RegisterRequest};
use ferrovirt_device_plugin::unix::{self, FileId};
use ferrovirt_device_plugin::{Config, DevicePlugins, Registered, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

/// A hang guard, not a speed check: what a test waits for must happen at all.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

/// The kubelet's registration service: records each request after dialing the plugin's
/// socket and asking its options, as the kubelet does; refuses the first `refuse` requests.
#[derive(Clone)]
struct Registrar {
    dir: PathBuf,
    seen: mpsc::UnboundedSender<RegisterRequest>,
    refuse: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let request = request.into_inner();
        {
            let mut refuse = self.refuse.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                let _ = self.seen.send(request);
                return Err(Status::internal("refused by the test"));
            }
        }
        let channel = unix::connect(&self.dir.join(&request.endpoint))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        DevicePluginClient::new(channel)
            .get_device_plugin_options(api::Empty {})
            .await?;
        let _ = self.seen.send(request);
        Ok(Response::new(api::Empty {}))
    }
}

struct Kubelet {
    socket: PathBuf,
    requests: mpsc::UnboundedReceiver<RegisterRequest>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Kubelet {
    fn start(dir: &Path, refuse: usize) -> Kubelet {
        let socket = dir.join(api::KUBELET_SOCKET);
        let (seen, requests) = mpsc::unbounded_channel();
        let registrar = Registrar {
            dir: dir.to_path_buf(),
            seen,
            refuse: Arc::new(Mutex::new(refuse)),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = unix::listen(&socket).unwrap();
        let server = tokio::spawn(unix::serve(
            listener,
            RegistrationServer::new(registrar),
            async {
                let _ = stopped.await;
            },
        ));
        Kubelet {
            socket,
            requests,
            stop,
            server,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        std::fs::remove_file(&self.socket).unwrap();
    }

    /// The next `n` registrations, sorted by resource.
    async fn registrations(&mut self, n: usize) -> Vec<RegisterRequest> {
        let mut got = Vec::new();
        while got.len() < n {
            got.push(
                within("a registration", self.requests.recv())
                    .await
                    .unwrap(),
            );
        }
        got.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
        got
    }
}

/// A node: the plugin directory and a host root with the three device nodes as files.
struct Node {
    _tmp: tempfile::TempDir,
    plugins: PathBuf,
    root: PathBuf,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let plugins = tmp.path().join("device-plugins");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(root.join("dev/net")).unwrap();
        for dev in ["dev/kvm", "dev/net/tun", "dev/vhost-net"] {
            std::fs::write(root.join(dev), "").unwrap();
        }
        Node {
            _tmp: tmp,
            plugins,
            root,
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::new(&self.plugins);
        config.device_root = self.root.clone();
        config.max_devices = 3;
        config.permissions = "rw".into();
        config
    }

    /// Runs the plugins until the returned sender is used or dropped.
    fn run_plugins(&self) -> Plugins {
        let (stop, stopped) = oneshot::channel::<()>();
        let (registered, watch) = tokio::sync::watch::channel(Registered::new());
        let run = DevicePlugins::run_reporting(
            self.config(),
            async {
                let _ = stopped.await;
            },
            registered,
        );
        Plugins {
            stop,
            run: tokio::spawn(run),
            registered: watch,
        }
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.plugins.join(format!("kubevirt-{name}.sock"))
    }

    async fn client(&self, name: &str) -> DevicePluginClient<tonic::transport::Channel> {
        DevicePluginClient::new(unix::connect(&self.socket(name)).await.unwrap())
    }

    async fn watch(&self, name: &str) -> Streaming<ListAndWatchResponse> {
        self.client(name)
            .await
            .list_and_watch(api::Empty {})
            .await
            .unwrap()
            .into_inner()
    }

    fn plugin_sockets(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(&self.plugins)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != api::KUBELET_SOCKET)
            .collect();
        names.sort();
        names
    }
}

struct Plugins {
    stop: oneshot::Sender<()>,
    run: JoinHandle<Result<()>>,
    registered: tokio::sync::watch::Receiver<Registered>,
}

impl Plugins {
    /// Waits until the plugins report `want` as registered.
    async fn registered(&mut self, want: &[&str]) {
        let want: Registered = want.iter().map(|r| r.to_string()).collect();
        within(
            "the registered resources",
            self.registered.wait_for(|r| *r == want),
        )
        .await
        .unwrap();
    }
}

async fn next(stream: &mut Streaming<ListAndWatchResponse>) -> ListAndWatchResponse {
    within("a device list", stream.message())
        .await
        .unwrap()
        .expect("the stream ended")
}

fn health(list: &ListAndWatchResponse) -> Vec<(String, String)> {
    list.devices
        .iter()
        .map(|d| (d.id.clone(), d.health.clone()))
        .collect()
}

fn all(prefix: &str, health: &str) -> Vec<(String, String)> {
    (0..3)
        .map(|i| (format!("{prefix}{i}"), health.to_string()))
        .collect()
}

fn resources(requests: &[RegisterRequest]) -> Vec<&str> {
    requests.iter().map(|r| r.resource_name.as_str()).collect()
}

const RESOURCES: [&str; 3] = [
    "devices.kubevirt.io/kvm",
    "devices.kubevirt.io/tun",
    "devices.kubevirt.io/vhost-net",
];

#[tokio::test]
async fn registers_serves_follows_the_device_and_cleans_up() {
    let node = Node::new();
    let mut plugins = node.run_plugins();
    // No kubelet yet: the plugins serve and wait for it.
    within("the plugin sockets", async {
        while node.plugin_sockets().len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut kubelet = Kubelet::start(&node.plugins, 0);

    let requests = kubelet.registrations(3).await;
    assert_eq!(resources(&requests), RESOURCES);
    for r in &requests {
        assert_eq!(r.version, "v1beta1");
        let name = r.resource_name.trim_start_matches("devices.kubevirt.io/");
        assert_eq!(r.endpoint, format!("kubevirt-{name}.sock"));
        assert_eq!(
            r.options,
            Some(api::DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: false
            })
        );
    }
    plugins.registered(&RESOURCES).await;

    let mut tun = node.watch("tun").await;
    assert_eq!(health(&next(&mut tun).await), all("tun", "Healthy"));
    let allocated = node
        .client("tun")
        .await
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["tun1".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        allocated.container_responses[0].devices,
        [api::DeviceSpec {
            container_path: "/dev/net/tun".into(),
            host_path: "/dev/net/tun".into(),
            permissions: "rw".into(),
        }]
    );

    // The device node goes and comes back.
    std::fs::remove_file(node.root.join("dev/net/tun")).unwrap();
    assert_eq!(health(&next(&mut tun).await), all("tun", "Unhealthy"));
    std::fs::write(node.root.join("dev/net/tun"), "").unwrap();
    assert_eq!(health(&next(&mut tun).await), all("tun", "Healthy"));
    // The other resources did not change.
    let mut kvm = node.watch("kvm").await;
    assert_eq!(health(&next(&mut kvm).await), all("kvm", "Healthy"));

    // Stopping: the kubelet is told there are no devices, the streams end, no socket stays.
    plugins.stop.send(()).unwrap();
    assert!(next(&mut tun).await.devices.is_empty());
    assert!(within("the end", tun.message()).await.unwrap().is_none());
    within("the plugins to stop", plugins.run)
        .await
        .unwrap()
        .unwrap();
    assert!(plugins.registered.borrow().is_empty());
    assert!(
        node.plugin_sockets().is_empty(),
        "{:?}",
        node.plugin_sockets()
    );
    kubelet.stop().await;
}

#[tokio::test]
async fn registers_again_when_the_kubelet_restarts() {
    let node = Node::new();
    let mut kubelet = Kubelet::start(&node.plugins, 0);
    let mut plugins = node.run_plugins();
    assert_eq!(resources(&kubelet.registrations(3).await), RESOURCES);
    plugins.registered(&RESOURCES).await;
    let mut kvm = node.watch("kvm").await;
    assert_eq!(health(&next(&mut kvm).await), all("kvm", "Healthy"));

    // A kubelet restart: it goes, removes every plugin socket, and serves a new kubelet.sock.
    kubelet.stop().await;
    // Without a kubelet nothing is registered.
    plugins.registered(&[]).await;
    for name in node.plugin_sockets() {
        std::fs::remove_file(node.plugins.join(name)).unwrap();
    }
    let mut kubelet = Kubelet::start(&node.plugins, 0);
    assert_eq!(resources(&kubelet.registrations(3).await), RESOURCES);
    plugins.registered(&RESOURCES).await;
    // The old stream was told the devices are gone; new sockets serve.
    assert!(next(&mut kvm).await.devices.is_empty());
    let mut kvm = node.watch("kvm").await;
    assert_eq!(health(&next(&mut kvm).await), all("kvm", "Healthy"));

    // Only the registration socket is recreated: the plugins register again on the same
    // sockets.
    let before: Vec<_> = ["kvm", "tun", "vhost-net"]
        .map(|n| FileId::of(&node.socket(n)))
        .into();
    kubelet.stop().await;
    let mut kubelet = Kubelet::start(&node.plugins, 0);
    assert_eq!(resources(&kubelet.registrations(3).await), RESOURCES);
    let after: Vec<_> = ["kvm", "tun", "vhost-net"]
        .map(|n| FileId::of(&node.socket(n)))
        .into();
    assert_eq!(before, after);
    assert!(before.iter().all(Option::is_some));
}

#[tokio::test]
async fn retries_a_refused_registration() {
    let node = Node::new();
    let mut kubelet = Kubelet::start(&node.plugins, 1);
    let mut plugins = node.run_plugins();
    let first = kubelet.registrations(1).await;
    // The refused one asks again; the other two succeed at once.
    let rest = kubelet.registrations(3).await;
    let mut all: Vec<_> = resources(&rest);
    all.retain(|r| *r != first[0].resource_name);
    assert_eq!(all.len(), 2, "{:?}", resources(&rest));
    assert!(resources(&rest).contains(&first[0].resource_name.as_str()));
    plugins.registered(&RESOURCES).await;
}
