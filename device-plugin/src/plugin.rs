//! One resource's plugin from start to stop: serve its socket, register with the kubelet,
//! follow the device node's health, serve and register again after a kubelet restart, and
//! withdraw the devices and remove the socket when stopped.
//!
//! A kubelet that (re)starts removes every socket in its directory but its own and then
//! creates `kubelet.sock`; the plugin notices either and starts over. After every wake-up
//! the plugin looks at the files themselves (a socket is told from its successor by device,
//! inode and change time), so the order of events does not matter and a late event of a
//! file already handled changes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::Registered;
use crate::api::{
    self, device_plugin_server::DevicePluginServer, registration_client::RegistrationClient,
};
use crate::config::{Config, HostDevice};
use crate::error::{Error, Result};
use crate::service::{Health, OPTIONS, Phase, Service};
use crate::unix::{self, FileId};
use crate::watch::Watcher;

/// How often the files are looked at without an event.
const RECHECK: Duration = Duration::from_secs(5);
/// Waits between failed attempts to serve or register (KubeVirt's).
const BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];
/// How long the kubelet gets to read the empty device list before the server stops.
const WITHDRAW: Duration = Duration::from_secs(1);

pub struct Plugin {
    config: Arc<Config>,
    device: HostDevice,
    resource: String,
    socket: PathBuf,
    /// The device node as this process sees it.
    seen: PathBuf,
    health: Health,
    /// The resources registered with the kubelet now, shared by all plugins.
    registered: Arc<watch::Sender<Registered>>,
}

/// One bound socket and the server on it.
struct Serving {
    phase: Arc<watch::Sender<Phase>>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    id: Option<FileId>,
}

/// The kubelet socket this plugin is registered with, and when to try again if it is not.
#[derive(Default)]
struct Registration {
    with: Option<FileId>,
    failures: usize,
    retry_at: Option<Instant>,
}

impl Plugin {
    pub fn new(
        config: Arc<Config>,
        device: HostDevice,
        registered: Arc<watch::Sender<Registered>>,
    ) -> Plugin {
        Plugin {
            registered,
            resource: device.resource_name(),
            socket: config.plugin_dir.join(device.socket_name()),
            seen: config.seen_path(&device.path),
            config,
            device,
            health: Health::Unhealthy,
        }
    }

    /// Runs until `stop` turns true; then the devices are withdrawn and the socket is gone.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        if self.device.pre_open {
            // Loads tun's and vhost-net's modules where they are not loaded yet.
            let _ = std::fs::File::open(&self.seen);
        }
        let device_dir = self.seen.parent().unwrap_or(&self.seen).to_path_buf();
        let mut watcher = Watcher::new(&self.config.plugin_dir, &device_dir)?;
        self.health = self.look_at_device();
        if self.health == Health::Unhealthy {
            tracing::warn!(resource = %self.resource, device = %self.seen.display(), "device not present: its devices are Unhealthy until it appears");
        }
        let mut failures = 0;
        loop {
            let serving = match self.serve() {
                Ok(s) => s,
                Err(e) => {
                    let wait = BACKOFF[failures.min(BACKOFF.len() - 1)];
                    failures += 1;
                    tracing::warn!(resource = %self.resource, error = %ferrovirt_runtime::chain(&e), ?wait, "cannot serve the device plugin");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                    }
                }
            };
            failures = 0;
            let stopped = self.follow(&serving, &mut watcher, &mut stop).await;
            self.set_registered(false);
            self.withdraw(serving).await;
            if stopped {
                tracing::info!(resource = %self.resource, "device plugin stopped");
                return Ok(());
            }
        }
    }

    /// Binds the socket and starts the gRPC server on it.
    fn serve(&self) -> Result<Serving> {
        let listener = unix::listen(&self.socket)?;
        let id = FileId::of(&self.socket);
        let phase = Arc::new(watch::Sender::new(Phase::Serving(self.health)));
        let service = Service::new(
            self.device.clone(),
            self.config.max_devices,
            self.config.permissions.clone(),
            phase.clone(),
        );
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(unix::serve(
            listener,
            DevicePluginServer::new(service),
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(resource = %self.resource, socket = %self.socket.display(), devices = self.config.max_devices, health = self.health.as_str(), "device plugin serving");
        Ok(Serving {
            phase,
            stop,
            server,
            id,
        })
    }

    /// Follows the device, the socket and the kubelet until the socket is gone (false) or
    /// `stop` (true).
    async fn follow(
        &mut self,
        serving: &Serving,
        watcher: &mut Watcher,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let kubelet = self.config.kubelet_socket();
        let mut registration = Registration::default();
        loop {
            let health = self.look_at_device();
            if health != self.health {
                match health {
                    Health::Healthy => {
                        tracing::info!(resource = %self.resource, device = %self.seen.display(), "device appeared")
                    }
                    Health::Unhealthy => {
                        tracing::warn!(resource = %self.resource, device = %self.seen.display(), "device disappeared")
                    }
                }
                self.health = health;
                serving.phase.send_replace(Phase::Serving(health));
            }
            if FileId::of(&self.socket) != serving.id {
                tracing::info!(resource = %self.resource, socket = %self.socket.display(), "the plugin socket was removed (a kubelet restart?): serving again");
                return false;
            }
            let kubelet_id = FileId::of(&kubelet);
            if kubelet_id.is_none() && registration.with.is_some() {
                tracing::info!(resource = %self.resource, "kubelet.sock is gone: waiting for the kubelet");
                registration = Registration::default();
                self.set_registered(false);
            }
            let due = registration.retry_at.is_none_or(|at| at <= Instant::now());
            if kubelet_id.is_some() && kubelet_id != registration.with && due {
                match self.register(&kubelet).await {
                    Ok(()) => {
                        tracing::info!(resource = %self.resource, kubelet = %kubelet.display(), "registered with the kubelet");
                        registration = Registration {
                            with: kubelet_id,
                            ..Registration::default()
                        };
                        self.set_registered(true);
                    }
                    Err(e) => {
                        let wait = BACKOFF[registration.failures.min(BACKOFF.len() - 1)];
                        registration.failures += 1;
                        registration.retry_at = Some(Instant::now() + wait);
                        self.set_registered(false);
                        tracing::warn!(resource = %self.resource, error = %ferrovirt_runtime::chain(&e), ?wait, "registration failed; trying again");
                    }
                }
            }
            let wake_at = match registration.retry_at {
                Some(at) if registration.with.is_none() => at.min(Instant::now() + RECHECK),
                _ => Instant::now() + RECHECK,
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return true,
                _ = watcher.next() => {}
                _ = sleep_until(wake_at) => watcher.retry(),
            }
        }
    }

    async fn register(&self, kubelet: &std::path::Path) -> Result<()> {
        let channel = unix::connect(kubelet).await?;
        let request = api::RegisterRequest {
            version: api::VERSION.into(),
            endpoint: self.device.socket_name(),
            resource_name: self.resource.clone(),
            options: Some(OPTIONS),
        };
        RegistrationClient::new(channel)
            .register(request)
            .await
            .map_err(|source| Error::Register {
                resource: self.resource.clone(),
                source,
            })?;
        Ok(())
    }

    /// Sends every watching kubelet an empty list, stops the server and removes the socket
    /// if it is still this server's.
    async fn withdraw(&self, serving: Serving) {
        serving.phase.send_replace(Phase::Stopping);
        // Each stream drops its receiver after sending the empty list.
        let _ = timeout(WITHDRAW, serving.phase.closed()).await;
        let _ = serving.stop.send(());
        let mut server = serving.server;
        match timeout(WITHDRAW, &mut server).await {
            Ok(Ok(Err(e))) => {
                tracing::warn!(resource = %self.resource, error = %ferrovirt_runtime::chain(&e), "device plugin server failed")
            }
            Ok(_) => {}
            Err(_) => server.abort(),
        }
        if serving.id.is_some()
            && FileId::of(&self.socket) == serving.id
            && let Err(e) = std::fs::remove_file(&self.socket)
        {
            tracing::warn!(resource = %self.resource, socket = %self.socket.display(), error = %e, "removing the socket");
        }
    }

    fn set_registered(&self, registered: bool) {
        self.registered.send_if_modified(|set| {
            if registered {
                set.insert(self.resource.clone())
            } else {
                set.remove(&self.resource)
            }
        });
    }

    fn look_at_device(&self) -> Health {
        match std::fs::metadata(&self.seen) {
            Ok(_) => Health::Healthy,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(device = %self.seen.display(), error = %e, "cannot look at the device");
                }
                Health::Unhealthy
            }
        }
    }
}
