//! KubeVirt's NUMA passthrough (`cpu.numa.guestMappingPassthrough`): the guest gets one
//! NUMA cell per host NUMA node that holds one of its pinned vCPUs' CPUs, with those vCPUs
//! and an equal share of its memory, and that memory comes from the hugepages of that host
//! node (`<numatune>`, a `<page nodeset>` per cell). KubeVirt's `numaMapping`
//! (pkg/virt-launcher/virtwrap/converter/vcpu) is the reference.

use super::xml::Xml;
use crate::{Error, Result};

const FIELD: &str = "spec.domain.cpu.numa.guestMappingPassthrough";

/// KubeVirt's feature gate for NUMA passthrough (kubevirt-config's `feature-gates`).
pub const FEATURE_GATE: &str = "NUMA";

/// Refuses NUMA passthrough, naming the field, unless the `NUMA` feature gate is among
/// `gates`, as KubeVirt's webhook does.
pub fn check_gate(
    spec: &crds::VirtualMachineInstanceSpec,
    gates: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let asked = spec
        .domain
        .cpu
        .as_ref()
        .is_some_and(crds::Cpu::numa_passthrough);
    if asked && !gates.contains(FEATURE_GATE) {
        return Err(Error::unsupported(
            FIELD,
            "the NUMA feature gate is not enabled (kubevirt-config's feature-gates)",
        ));
    }
    Ok(())
}

/// A host NUMA node and its CPUs (`/sys/devices/system/node/node<id>/cpulist`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNode {
    pub id: u32,
    pub cpus: Vec<u32>,
}

/// The host's NUMA nodes as sysfs lists them under `root` (`/sys/devices/system/node`),
/// by id.
pub fn host_nodes(root: &std::path::Path) -> Result<Vec<HostNode>> {
    let entries = std::fs::read_dir(root).map_err(Error::io("reading", root))?;
    let mut nodes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let path = entry.path().join("cpulist");
        let list = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        let cpus = super::parse_cpu_list(&list).ok_or_else(|| {
            Error::io("reading", &path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{list:?} is not a CPU list"),
            ))
        })?;
        nodes.push(HostNode { id, cpus });
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// A guest NUMA cell: its vCPUs, memory and the host node it lives on.
#[derive(Debug)]
pub(super) struct Cell {
    pub host_node: u32,
    pub vcpus: Vec<u32>,
    pub memory_kib: u64,
}

/// The guest's cells for the pinned vCPUs `pins` (vCPU, host CPU) on `nodes`, with
/// `memory_kib` of guest memory in pages of `page_kib`. vCPUs past the pinned ones (the
/// hotplug headroom, up to `max_vcpus`) go into the first cell: QEMU wants every possible
/// vCPU in some cell. The memory is split equally, in whole pages; what does not divide
/// is left out, as KubeVirt does.
pub(super) fn cells(
    pins: &[(u32, u32)],
    max_vcpus: u32,
    nodes: &[HostNode],
    memory_kib: u64,
    page_kib: u64,
) -> Result<Vec<Cell>> {
    if nodes.is_empty() {
        return Err(Error::unsupported(
            FIELD,
            "the node reports no NUMA topology (/sys/devices/system/node)",
        ));
    }
    let mut cells: Vec<Cell> = Vec::new();
    for node in nodes {
        let vcpus: Vec<u32> = pins
            .iter()
            .filter(|(_, c)| node.cpus.contains(c))
            .map(|(v, _)| *v)
            .collect();
        if !vcpus.is_empty() {
            cells.push(Cell {
                host_node: node.id,
                vcpus,
                memory_kib: 0,
            });
        }
    }
    if let Some((v, c)) = pins
        .iter()
        .find(|(_, c)| !nodes.iter().any(|n| n.cpus.contains(c)))
    {
        return Err(Error::unsupported(
            FIELD,
            format!("vCPU {v} is pinned to CPU {c}, which no host NUMA node lists"),
        ));
    }
    let Some(first) = cells.first_mut() else {
        return Err(Error::unsupported(FIELD, "no vCPU is pinned"));
    };
    first.vcpus.extend(pins.len() as u32..max_vcpus);
    let count = cells.len() as u64;
    let pages = memory_kib / page_kib;
    if pages < count {
        return Err(Error::unsupported(
            FIELD,
            format!(
                "{memory_kib} KiB of guest memory is less than one {page_kib} KiB page for each of the {count} NUMA cells"
            ),
        ));
    }
    for cell in &mut cells {
        cell.memory_kib = pages / count * page_kib;
    }
    Ok(cells)
}

/// `<numatune>`: all the guest's memory on the cells' host nodes, each cell's on its own.
pub(super) fn numatune(x: &mut Xml, cells: &[Cell]) {
    let all = cells
        .iter()
        .map(|c| c.host_node.to_string())
        .collect::<Vec<_>>()
        .join(",");
    x.open("numatune", &[]);
    x.empty("memory", &[("mode", "strict"), ("nodeset", &all)]);
    for (i, cell) in cells.iter().enumerate() {
        x.empty(
            "memnode",
            &[
                ("cellid", &i.to_string()),
                ("mode", "strict"),
                ("nodeset", &cell.host_node.to_string()),
            ],
        );
    }
    x.close();
}

/// `<numa>` inside `<cpu>`: the cells with their vCPUs and memory.
pub(super) fn cpu_cells(x: &mut Xml, cells: &[Cell]) {
    x.open("numa", &[]);
    for (i, cell) in cells.iter().enumerate() {
        x.empty(
            "cell",
            &[
                ("id", &i.to_string()),
                ("cpus", &super::cpu_list(&cell.vcpus)),
                ("memory", &cell.memory_kib.to_string()),
                ("unit", "KiB"),
            ],
        );
    }
    x.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, cpus: &[u32]) -> HostNode {
        HostNode {
            id,
            cpus: cpus.to_vec(),
        }
    }

    #[test]
    fn cells_follow_the_host_nodes_of_the_pinned_cpus() {
        let nodes = [node(0, &[0, 1]), node(1, &[2, 3])];
        // vCPUs on CPUs 3, 0, 2: two cells, host node 0 first; 3 pages of 2 MiB split
        // as one each, the third left out.
        let two = cells(&[(0, 3), (1, 0), (2, 2)], 3, &nodes, 3 * 2048, 2048).unwrap();
        let got: Vec<_> = two
            .iter()
            .map(|c| (c.host_node, c.vcpus.clone(), c.memory_kib))
            .collect();
        assert_eq!(got, [(0, vec![1], 2048), (1, vec![0, 2], 2048)]);
        // One node: one cell, with the hotplug headroom's vCPUs.
        let one = cells(&[(0, 1)], 4, &[node(0, &[0, 1])], 8192, 2048).unwrap();
        assert_eq!(one[0].vcpus, [0, 1, 2, 3]);
        assert_eq!(one[0].memory_kib, 8192);
    }

    #[test]
    fn numa_passthrough_needs_the_feature_gate() {
        let spec: crds::VirtualMachineInstanceSpec = serde_yaml::from_str(
            "domain: {devices: {}, cpu: {numa: {guestMappingPassthrough: {}}}}",
        )
        .unwrap();
        let err = check_gate(&spec, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(FIELD) && err.contains("NUMA feature gate"),
            "{err}"
        );
        check_gate(&spec, &[FEATURE_GATE.to_owned()].into()).unwrap();
        let plain: crds::VirtualMachineInstanceSpec =
            serde_yaml::from_str("domain: {devices: {}}").unwrap();
        check_gate(&plain, &Default::default()).unwrap();
    }

    #[test]
    fn what_cannot_be_mapped_is_refused_naming_the_field() {
        for (pins, nodes, memory, says) in [
            (vec![(0, 5)], vec![node(0, &[0])], 4096, "CPU 5"),
            (vec![(0, 0)], vec![], 4096, "no NUMA topology"),
            (
                vec![(0, 0), (1, 1)],
                vec![node(0, &[0]), node(1, &[1])],
                2048,
                "less than one",
            ),
        ] {
            let err = cells(&pins, pins.len() as u32, &nodes, memory, 2048)
                .unwrap_err()
                .to_string();
            assert!(err.contains(FIELD) && err.contains(says), "{err}");
        }
    }
}
