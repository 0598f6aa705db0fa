//! IOThreads as KubeVirt counts and assigns them (`ioThreadsPolicy`,
//! `disks[].dedicatedIOThread`): the domain's `<iothreads>` and each virtio disk's
//! `<driver iothread=...>`.

use crds::{DiskBus, DomainSpec, IoThreadsPolicy};

use super::{Resources, resource_cpus};
use crate::{Error, Result};

/// A disk of the domain as the IOThreads count sees it.
pub struct DiskThreads {
    pub bus: DiskBus,
    pub dedicated: bool,
}

/// The IOThreads of a domain: how many, and the thread of each disk (in the order given;
/// `None` for disks not on virtio).
#[derive(Debug, PartialEq, Eq)]
pub struct IoThreads {
    pub count: u32,
    pub per_disk: Vec<Option<u32>>,
}

/// KubeVirt's plan: none unless `ioThreadsPolicy` is set or a disk asks for a dedicated
/// thread. Every disk (any bus) counts towards the pool, as KubeVirt counts them: under
/// `shared` (or no policy) the pool is one thread, under `auto` two per CPU of
/// `resources.requests.cpu` (else `limits.cpu`, else one CPU), rounded up. Disks with a
/// dedicated thread take theirs from the pool's limit, which always keeps one shared
/// thread. Virtio disks without one take the shared threads round-robin; the dedicated
/// threads are numbered after the shared ones.
pub fn plan(domain: &DomainSpec, disks: &[DiskThreads]) -> Result<Option<IoThreads>> {
    let policy = domain.io_threads_policy;
    if policy.is_none() && !disks.iter().any(|d| d.dedicated) {
        return Ok(None);
    }
    let limit = match policy {
        None | Some(IoThreadsPolicy::Shared) => 1,
        Some(IoThreadsPolicy::Auto) => 2 * pool_cpus(domain)?,
        Some(IoThreadsPolicy::SupplementalPool) => {
            return Err(Error::unsupported(
                "spec.domain.ioThreadsPolicy",
                "supplementalPool needs QEMU 9 and libvirt 10 (a disk's queues mapped over \
                 a pool of IOThreads); use shared or auto",
            ));
        }
    };
    let dedicated = disks.iter().filter(|d| d.dedicated).count() as u32;
    let mut shared = disks.len() as u32 - dedicated;
    if shared + dedicated > limit {
        shared = limit.saturating_sub(dedicated).max(1);
    }
    let (mut next_shared, mut next_dedicated) = (1, shared + 1);
    let per_disk = disks
        .iter()
        .map(|d| {
            if d.bus != DiskBus::Virtio {
                return None;
            }
            let id = if d.dedicated {
                next_dedicated += 1;
                next_dedicated - 1
            } else {
                let id = next_shared;
                next_shared = next_shared % shared + 1;
                id
            };
            Some(id)
        })
        .collect();
    Ok(Some(IoThreads {
        count: shared + dedicated,
        per_disk,
    }))
}

/// The CPUs the `auto` pool is sized by: `resources.requests.cpu`, else `limits.cpu`,
/// rounded up; one without either.
fn pool_cpus(domain: &DomainSpec) -> Result<u32> {
    let cpus = resource_cpus(domain, [Resources::Requests, Resources::Limits])?;
    Ok(cpus.map_or(1, |(_, n)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(policy: Option<IoThreadsPolicy>, cpu_request: Option<&str>) -> DomainSpec {
        let mut d = DomainSpec {
            io_threads_policy: policy,
            ..Default::default()
        };
        if let Some(cpu) = cpu_request {
            d.resources = Some(crds::ResourceRequirements {
                requests: Some(
                    [(
                        "cpu".to_owned(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.into()),
                    )]
                    .into(),
                ),
                limits: None,
            });
        }
        d
    }

    fn disks(spec: &str) -> Vec<DiskThreads> {
        spec.chars()
            .map(|c| DiskThreads {
                bus: if c == 's' {
                    DiskBus::Sata
                } else {
                    DiskBus::Virtio
                },
                dedicated: c == 'D',
            })
            .collect()
    }

    #[test]
    fn none_without_a_policy_or_a_dedicated_disk() {
        assert_eq!(plan(&domain(None, None), &disks("vvs")).unwrap(), None);
    }

    /// The user guide's examples: 7 virtio disks, the 2nd and 3rd dedicated.
    #[test]
    fn the_user_guides_shared_and_auto_layouts() {
        let seven = disks("vDDvvvv");
        let shared = plan(&domain(Some(IoThreadsPolicy::Shared), None), &seven)
            .unwrap()
            .unwrap();
        assert_eq!(shared.count, 3);
        let ids = |p: &IoThreads| p.per_disk.iter().map(|i| i.unwrap()).collect::<Vec<_>>();
        assert_eq!(ids(&shared), [1, 2, 3, 1, 1, 1, 1]);
        // auto with 2 CPUs requested: a pool of 4, 2 of them dedicated.
        let auto = plan(&domain(Some(IoThreadsPolicy::Auto), Some("2")), &seven)
            .unwrap()
            .unwrap();
        assert_eq!(auto.count, 4);
        assert_eq!(ids(&auto), [1, 3, 4, 2, 1, 2, 1]);
    }

    #[test]
    fn auto_rounds_cpus_up_and_always_keeps_a_shared_thread() {
        let p = plan(
            &domain(Some(IoThreadsPolicy::Auto), Some("500m")),
            &disks("vvvv"),
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.count, p.per_disk[2]), (2, Some(1)));
        let p = plan(&domain(Some(IoThreadsPolicy::Auto), None), &disks("DDDv"))
            .unwrap()
            .unwrap();
        assert_eq!(p.count, 4);
        assert_eq!(p.per_disk, [Some(2), Some(3), Some(4), Some(1)]);
    }

    #[test]
    fn other_buses_count_but_get_no_thread() {
        let p = plan(
            &domain(Some(IoThreadsPolicy::Auto), Some("1")),
            &disks("sDs"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.count, 2);
        assert_eq!(p.per_disk, [None, Some(2), None]);
        // A dedicated disk alone, without a policy: shared.
        let p = plan(&domain(None, None), &disks("Dv")).unwrap().unwrap();
        assert_eq!((p.count, p.per_disk), (2, vec![Some(2), Some(1)]));
    }
}
