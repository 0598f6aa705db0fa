//! The kubelet device plugins of KubeVirt's virt-handler: `devices.kubevirt.io/kvm`, `/tun`
//! and `/vhost-net`, so launcher pods get `/dev/kvm`, `/dev/net/tun` and `/dev/vhost-net`
//! by requesting them as resources (`device-plugin/README.md`).
//!
//! Each resource has a gRPC server on its own unix socket in the kubelet's device plugin
//! directory (`kubevirt-<name>.sock`) and registers with the kubelet's `kubelet.sock`
//! ([`api`], `v1beta1`). It advertises [`Config::max_devices`] devices, all Healthy while
//! the device node exists and Unhealthy while it does not; `Allocate` hands each container
//! the node with [`Config::permissions`]. When the kubelet restarts (it removes the plugin
//! sockets and creates `kubelet.sock` anew) the plugins serve and register again. When
//! stopped they send the kubelet an empty device list and remove their sockets.
//!
//! ```no_run
//! # async fn f() -> ferrovirt_device_plugin::Result<()> {
//! use ferrovirt_device_plugin::{Config, DevicePlugins};
//! let config = Config::new("/var/lib/kubelet/device-plugins");
//! DevicePlugins::run(config, async { /* SIGTERM */ }).await
//! # }
//! ```

pub mod api;
mod config;
mod error;
mod plugin;
mod service;
pub mod unix;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

pub use config::{
    Args, Config, DEFAULT_MAX_DEVICES, HostDevice, RESOURCE_NAMESPACE, default_permissions,
};
pub use error::{Error, Result};

/// The resources registered with the current kubelet (`devices.kubevirt.io/kvm`, ...).
/// KubeVirt's virt-handler labels its Node `kubevirt.io/schedulable=true` only while every
/// one of [`Config::devices`] is.
pub type Registered = BTreeSet<String>;

/// The device plugins of one node.
pub struct DevicePlugins;

impl DevicePlugins {
    /// Serves every device of `config` until `shutdown` resolves, then withdraws them and
    /// removes the sockets. Fails at once on a bad configuration (naming the flag) or a
    /// missing plugin directory; problems after that (no kubelet yet, a refused
    /// registration) are logged and retried. Returns an error only when a plugin cannot
    /// run at all (inotify), after stopping the others.
    pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (registered, _) = tokio::sync::watch::channel(Registered::new());
        Self::run_reporting(config, shutdown, registered).await
    }

    /// [`DevicePlugins::run`], keeping `registered` up to date: a resource is in it from its
    /// registration until its kubelet goes, its socket is removed or the plugins stop.
    pub async fn run_reporting(
        config: Config,
        shutdown: impl Future<Output = ()>,
        registered: tokio::sync::watch::Sender<Registered>,
    ) -> Result<()> {
        config.validate()?;
        let registered = Arc::new(registered);
        let config = Arc::new(config);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut plugins = JoinSet::new();
        let mut resources = HashMap::new();
        for device in &config.devices {
            let plugin = plugin::Plugin::new(config.clone(), device.clone(), registered.clone());
            let task = plugins.spawn(plugin.run(stopped.clone()));
            resources.insert(task.id(), device.resource_name());
        }
        let outcome = |joined: Result<(Id, Result<()>), JoinError>| match joined {
            Ok((_, result)) => result,
            Err(source) => Err(Error::Task {
                resource: resources.get(&source.id()).cloned().unwrap_or_default(),
                source,
            }),
        };
        tokio::pin!(shutdown);
        let mut result = Ok(());
        tokio::select! {
            _ = &mut shutdown => tracing::info!("stopping the device plugins"),
            Some(first) = plugins.join_next_with_id() => result = outcome(first),
        }
        let _ = stop.send(true);
        while let Some(next) = plugins.join_next_with_id().await {
            if result.is_ok() {
                result = outcome(next);
            }
        }
        result
    }
}
