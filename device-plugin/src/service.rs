//! The `DevicePlugin` gRPC service of one resource: its devices' list and health, and what
//! `Allocate` hands a container.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::{self, device_plugin_server::DevicePlugin};
use crate::config::HostDevice;

/// Whether the device node is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => api::HEALTHY,
            Health::Unhealthy => api::UNHEALTHY,
        }
    }
}

/// What every `ListAndWatch` stream of one server reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// All devices, with this health.
    Serving(Health),
    /// An empty list, then the stream ends: the plugin stops, and the kubelet should drop
    /// the devices at once (the API has no way to deregister).
    Stopping,
}

/// The options the plugin registers with and `GetDevicePluginOptions` returns: the kubelet
/// calls neither `PreStartContainer` nor `GetPreferredAllocation`, as with KubeVirt's.
pub const OPTIONS: api::DevicePluginOptions = api::DevicePluginOptions {
    pre_start_required: false,
    get_preferred_allocation_available: false,
};

/// The devices of resource `name`: `<name>0` .. `<name><max-1>`, all with the node's
/// health (they all stand for the one device node); none when stopping.
pub fn list(name: &str, max_devices: u32, phase: Phase) -> api::ListAndWatchResponse {
    let Phase::Serving(health) = phase else {
        return api::ListAndWatchResponse::default();
    };
    let devices = (0..max_devices)
        .map(|i| api::Device {
            id: format!("{name}{i}"),
            health: health.as_str().into(),
            topology: None,
        })
        .collect();
    api::ListAndWatchResponse { devices }
}

/// The service behind one plugin socket.
pub struct Service {
    device: HostDevice,
    max_devices: u32,
    permissions: String,
    phase: Arc<watch::Sender<Phase>>,
}

impl Service {
    pub fn new(
        device: HostDevice,
        max_devices: u32,
        permissions: String,
        phase: Arc<watch::Sender<Phase>>,
    ) -> Self {
        Service {
            device,
            max_devices,
            permissions,
            phase,
        }
    }

    fn owns(&self, id: &str) -> bool {
        id.strip_prefix(&self.device.name)
            .and_then(|n| n.parse::<u32>().ok().filter(|i| i.to_string() == n))
            .is_some_and(|i| i < self.max_devices)
    }

    fn resource(&self) -> String {
        self.device.resource_name()
    }
}

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(OPTIONS))
    }

    type ListAndWatchStream = ReceiverStream<Result<api::ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut phase = self.phase.subscribe();
        let (tx, rx) = mpsc::channel(4);
        let (name, max_devices) = (self.device.name.clone(), self.max_devices);
        let resource = self.resource();
        tracing::info!(%resource, "the kubelet watches the devices");
        tokio::spawn(async move {
            loop {
                let current = *phase.borrow_and_update();
                if tx
                    .send(Ok(list(&name, max_devices, current)))
                    .await
                    .is_err()
                {
                    tracing::debug!(%resource, "ListAndWatch: the kubelet went away");
                    return;
                }
                if current == Phase::Stopping {
                    return;
                }
                tokio::select! {
                    changed = phase.changed() => if changed.is_err() {
                        // The plugin is gone without saying so: withdraw the devices.
                        let _ = tx.send(Ok(list(&name, max_devices, Phase::Stopping))).await;
                        return;
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                let size = usize::try_from(c.allocation_size).unwrap_or(0);
                let mut ids = c.must_include_device_ids;
                for id in c.available_device_ids {
                    if ids.len() >= size {
                        break;
                    }
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                api::ContainerPreferredAllocationResponse { device_ids: ids }
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let request = request.into_inner();
        let resource = self.resource();
        let mut container_responses = Vec::with_capacity(request.container_requests.len());
        for c in &request.container_requests {
            if let Some(id) = c.devices_ids.iter().find(|id| !self.owns(id)) {
                tracing::warn!(%resource, %id, "Allocate: not one of this plugin's devices");
                return Err(Status::invalid_argument(format!(
                    "{id} is not a device of {resource}"
                )));
            }
            let path = self.device.path.to_string_lossy().into_owned();
            container_responses.push(api::ContainerAllocateResponse {
                devices: vec![api::DeviceSpec {
                    container_path: path.clone(),
                    host_path: path,
                    permissions: self.permissions.clone(),
                }],
                ..Default::default()
            });
        }
        tracing::info!(%resource, containers = container_responses.len(), "Allocate");
        Ok(Response::new(api::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn service(max: u32) -> (Service, Arc<watch::Sender<Phase>>) {
        let phase = Arc::new(watch::Sender::new(Phase::Serving(Health::Healthy)));
        let tun = HostDevice::permanent().remove(1);
        (Service::new(tun, max, "rw".into(), phase.clone()), phase)
    }

    fn ids_and_health(list: &api::ListAndWatchResponse) -> Vec<(&str, &str)> {
        list.devices
            .iter()
            .map(|d| (d.id.as_str(), d.health.as_str()))
            .collect()
    }

    #[test]
    fn every_device_has_the_nodes_health() {
        let healthy = list("kvm", 3, Phase::Serving(Health::Healthy));
        assert_eq!(
            ids_and_health(&healthy),
            [
                ("kvm0", "Healthy"),
                ("kvm1", "Healthy"),
                ("kvm2", "Healthy")
            ]
        );
        let sick = list("kvm", 2, Phase::Serving(Health::Unhealthy));
        assert_eq!(
            ids_and_health(&sick),
            [("kvm0", "Unhealthy"), ("kvm1", "Unhealthy")]
        );
        assert!(list("kvm", 2, Phase::Stopping).devices.is_empty());
    }

    #[tokio::test]
    async fn allocate_hands_each_container_the_node() {
        let (s, _phase) = service(3);
        let request = api::AllocateRequest {
            container_requests: vec![
                api::ContainerAllocateRequest {
                    devices_ids: vec!["tun0".into(), "tun2".into()],
                },
                api::ContainerAllocateRequest {
                    devices_ids: vec!["tun1".into()],
                },
            ],
        };
        let response = s
            .allocate(Request::new(request))
            .await
            .unwrap()
            .into_inner();
        let spec = api::DeviceSpec {
            container_path: "/dev/net/tun".into(),
            host_path: "/dev/net/tun".into(),
            permissions: "rw".into(),
        };
        assert_eq!(response.container_responses.len(), 2);
        for c in &response.container_responses {
            assert_eq!(c.devices, std::slice::from_ref(&spec));
            assert!(c.mounts.is_empty() && c.envs.is_empty());
        }
    }

    #[tokio::test]
    async fn allocate_refuses_devices_it_does_not_have() {
        let (s, _phase) = service(3);
        for id in ["tun3", "tun01", "kvm0", "tun", "tun-1"] {
            let request = api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest {
                    devices_ids: vec!["tun0".into(), id.into()],
                }],
            };
            let status = s.allocate(Request::new(request)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{id}");
            assert_eq!(
                status.message(),
                format!("{id} is not a device of devices.kubevirt.io/tun")
            );
        }
    }

    #[tokio::test]
    async fn preferred_allocation_keeps_the_required_and_fills_up() {
        let (s, _phase) = service(3);
        let request = api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_ids: vec!["tun0".into(), "tun1".into(), "tun2".into()],
                must_include_device_ids: vec!["tun1".into()],
                allocation_size: 2,
            }],
        };
        let response = s
            .get_preferred_allocation(Request::new(request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.container_responses[0].device_ids, ["tun1", "tun0"]);
    }

    #[tokio::test]
    async fn list_and_watch_follows_the_phase_and_ends_with_an_empty_list() {
        let (s, phase) = service(2);
        let mut stream = s
            .list_and_watch(Request::new(api::Empty {}))
            .await
            .unwrap()
            .into_inner();
        let mut next = async || stream.next().await.unwrap().unwrap();
        assert_eq!(
            ids_and_health(&next().await),
            [("tun0", "Healthy"), ("tun1", "Healthy")]
        );
        phase.send_replace(Phase::Serving(Health::Unhealthy));
        assert_eq!(
            ids_and_health(&next().await),
            [("tun0", "Unhealthy"), ("tun1", "Unhealthy")]
        );
        phase.send_replace(Phase::Stopping);
        assert!(next().await.devices.is_empty());
        assert!(
            stream.next().await.is_none(),
            "the stream ends after the empty list"
        );
        // Every stream has let go of the phase: the plugin may stop its server.
        phase.closed().await;
    }
}
