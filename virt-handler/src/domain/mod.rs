//! VMI spec -> libvirt domain XML, as a pure function. Golden tests in
//! `tests/golden.rs` cover every supported field; anything unsupported is an error that
//! names the field.

mod clock;
mod devices;
mod filesystems;
mod iothreads;
mod numa;
mod xml;

use std::path::Path;

/// A section of `spec.domain.resources` (crds' [`crds::ResourceSection`]).
pub(crate) use crds::ResourceSection as Resources;
use crds::{DomainSpec, VirtualMachineInstanceSpec};

use crate::config::Virtualization;
use crate::volumes::Planned;
use crate::{Error, Result};
use crds::quantity;
use ferrovirt_node_contract::paths::{GUEST_AGENT_SOCKET, SERIAL_LOG, SERIAL_SOCKET, VNC_SOCKET};

pub use numa::{HostNode, check_gate as check_numa_gate, host_nodes};
pub use xml::escape;

use crate::firmware::{OVMF_CODE_SECURE, efi_firmware, nvram};

/// QEMU's default CPU model for TCG on x86_64, named when features must apply to it.
const TCG_DEFAULT_MODEL: &str = "qemu64";

/// Everything the conversion needs besides the spec.
pub struct Input<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub spec: &'a VirtualMachineInstanceSpec,
    pub virtualization: Virtualization,
    /// The per-VMI directory as the launcher sees it.
    pub vmi_dir: &'a Path,
    /// The root of the kernel-boot container's image as the launcher sees it
    /// (`/proc/<pid in the pod>/root`, see `volumes::containerdisk`): `kernelPath` and
    /// `initrdPath` are under it.
    pub kernel_root: &'a Path,
    /// The planned volumes (`volumes::plan`).
    pub volumes: &'a [Planned],
    /// The CPUs the launcher may run on (its container's cpuset; empty: not known): a VMI
    /// with dedicated CPUs has its vCPUs pinned to them.
    pub pod_cpus: &'a [u32],
    /// The host's NUMA nodes, for `cpu.numa.guestMappingPassthrough` (empty: not known).
    pub host_nodes: &'a [HostNode],
}

/// The libvirt domain name of a VMI (namespace and name, like KubeVirt).
pub fn domain_name(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// The domain XML of a VMI manifest (YAML or JSON), with its volumes planned in
/// `vmi_dir` (PVCs cannot be resolved offline) and host disks allowed as `host_disks`
/// says. For `virt-handler domain-xml`.
pub fn from_manifest(
    manifest: &str,
    emulation: bool,
    vmi_dir: &Path,
    kernel_root: &Path,
    host_disks: &crate::volumes::HostDiskPolicy,
) -> Result<String> {
    use kube::ResourceExt;
    let vmi: crds::VirtualMachineInstance = serde_yaml::from_str(manifest)
        .map_err(|e| Error::unsupported("manifest", e.to_string()))?;
    let plans = crate::volumes::plan(&vmi.spec, vmi_dir, &Default::default(), host_disks)?;
    let virtualization = if emulation {
        Virtualization::Emulation
    } else {
        Virtualization::Kvm
    };
    convert(&Input {
        namespace: &vmi.namespace().unwrap_or_else(|| "default".into()),
        name: &vmi.name_any(),
        uid: &vmi
            .uid()
            .unwrap_or_else(|| "00000000-0000-4000-8000-000000000000".into()),
        spec: &vmi.spec,
        virtualization,
        vmi_dir,
        kernel_root,
        volumes: &plans,
        pod_cpus: &[],
        host_nodes: &[],
    })
}

/// Dedicated CPUs (`cpu.dedicatedCpuPlacement`), as KubeVirt pins them: vCPU i on the
/// launcher pod's i-th CPU, the emulator thread on the next one when isolated
/// (`isolateEmulatorThread`), else on all of the pod's CPUs. The pod must have exactly the
/// CPUs it asked for, as kubelet's static CPU manager gives a Guaranteed pod: anything
/// else means the CPUs are not its own, and the VMI fails saying so. Only the vCPUs the
/// guest starts with are pinned (KubeVirt's, with a hotplug headroom). None without
/// dedicated CPUs.
fn pinning(domain: &DomainSpec, vcpus: u32, pod_cpus: &[u32]) -> Result<Option<Pinning>> {
    let Some(cpu) = domain.cpu.as_ref() else {
        return Ok(None);
    };
    if cpu.dedicated_cpu_placement != Some(true) {
        return Ok(None);
    }
    let isolate = cpu.isolate_emulator_thread == Some(true);
    let wanted = vcpus as usize + usize::from(isolate);
    if pod_cpus.len() != wanted {
        let have = if pod_cpus.is_empty() {
            "no known CPUs".to_owned()
        } else {
            format!("the CPUs {}", cpu_list(pod_cpus))
        };
        return Err(Error::unsupported(
            "spec.domain.cpu.dedicatedCpuPlacement",
            format!(
                "{wanted} dedicated CPUs are wanted ({vcpus} vCPUs{}), but the launcher pod has {have}: \
                 its node must run kubelet's static CPU manager policy",
                if isolate {
                    " and the emulator thread"
                } else {
                    ""
                }
            ),
        ));
    }
    let emulator = if isolate {
        pod_cpus[vcpus as usize].to_string()
    } else {
        cpu_list(pod_cpus)
    };
    Ok(Some(Pinning {
        vcpus: (0..vcpus).zip(pod_cpus.iter().copied()).collect(),
        emulator,
    }))
}

/// Where dedicated CPUs put the vCPUs and the emulator thread.
struct Pinning {
    /// (vCPU, host CPU)
    vcpus: Vec<(u32, u32)>,
    /// The emulator thread's cpuset.
    emulator: String,
}

impl Pinning {
    /// `<cputune>` with the pins.
    fn write(&self, x: &mut xml::Xml) {
        x.open("cputune", &[]);
        for (v, c) in &self.vcpus {
            x.empty(
                "vcpupin",
                &[("vcpu", &v.to_string()), ("cpuset", &c.to_string())],
            );
        }
        x.empty("emulatorpin", &[("cpuset", &self.emulator)]);
        x.close();
    }
}

/// CPUs as libvirt's cpuset lists them (`1,3,4`).
fn cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs of a `Cpus_allowed_list` (`/proc/<pid>/status`): `0-2,5`. None when it is
/// not such a list.
pub fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// An absolute path of an image under the image's root as the launcher sees it.
fn in_root(root: &Path, path_in_image: &str) -> String {
    root.join(path_in_image.trim_start_matches('/'))
        .display()
        .to_string()
}

/// The domain XML of the VMI, its interfaces on QEMU's user-mode network (a launcher in
/// the node's network namespace).
pub fn convert(input: &Input) -> Result<String> {
    convert_with(input, &crate::network::Attachment::UserMode)
}

/// The domain XML of the VMI with its interfaces attached as `network` says.
pub fn convert_with(input: &Input, network: &crate::network::Attachment) -> Result<String> {
    let spec = input.spec;
    let domain = &spec.domain;
    let dir = input.vmi_dir;
    let mut x = xml::Xml::new();
    // passt NICs are QEMU arguments of libvirt's qemu namespace (devices::interfaces).
    let passt = network.nics().is_some_and(|n| {
        n.iter()
            .any(|n| matches!(n.backend, crate::network::Backend::Passt { .. }))
    });
    let mut root = vec![("type", input.virtualization.domain_type())];
    if passt {
        root.push(("xmlns:qemu", devices::QEMU_NS));
    }
    x.open("domain", &root);
    x.text("name", &[], &domain_name(input.namespace, input.name));
    let firmware = domain.firmware.as_ref();
    x.text(
        "uuid",
        &[],
        firmware
            .and_then(|f| f.uuid.as_deref())
            .unwrap_or(input.uid),
    );
    x.open("metadata", &[]);
    x.empty(
        "ferrovirt:vmi",
        &[
            ("xmlns:ferrovirt", "https://ferrovirt.io/xmlns/vmi/v1"),
            ("namespace", input.namespace),
            ("name", input.name),
            ("uid", input.uid),
        ],
    );
    x.close();

    let memory = memory_kib(domain)?;
    let topology = topology(domain)?;
    let hugepages = domain.memory.as_ref().and_then(|m| m.hugepages.as_ref());
    let pinning = pinning(domain, topology.vcpus(), input.pod_cpus)?;
    let pins = pinning.as_ref().map_or(&[][..], |p| &p.vcpus[..]);
    let cells = match hugepages {
        Some(h) if domain.cpu.as_ref().is_some_and(crds::Cpu::numa_passthrough) => {
            Some(numa::cells(
                pins,
                topology.max_vcpus(),
                input.host_nodes,
                memory,
                h.page_size.bytes() / 1024,
            )?)
        }
        // virt-api refuses NUMA passthrough without hugepages.
        _ => None,
    };
    let memory = cells
        .as_ref()
        .map_or(memory, |c| c.iter().map(|c| c.memory_kib).sum());
    x.text("memory", &[("unit", "KiB")], &memory.to_string());
    let current = topology.vcpus().to_string();
    let mut vcpu_attrs = vec![("placement", "static")];
    if topology.max_sockets.is_some() {
        vcpu_attrs.push(("current", &current));
    }
    x.text("vcpu", &vcpu_attrs, &topology.max_vcpus().to_string());
    let disks = devices::plan_disks(spec, input.volumes)?;
    let threads: Vec<_> = disks.iter().map(|d| d.threads()).collect();
    let iothreads = iothreads::plan(domain, &threads)?;
    if let Some(t) = &iothreads {
        x.text("iothreads", &[], &t.count.to_string());
    }
    if let Some(p) = &pinning {
        p.write(&mut x);
    }
    if let Some(cells) = &cells {
        numa::numatune(&mut x, cells);
    }
    if domain.devices.autoattach_vsock == Some(true) {
        return Err(Error::unsupported(
            "spec.domain.devices.autoattachVSOCK",
            "VSOCK needs the vhost_vsock kernel module on the node (/dev/vhost-vsock), \
             which this node's kernel does not have",
        ));
    }
    let shared_memory = !domain.devices.filesystems.is_empty();
    if hugepages.is_some() || shared_memory {
        memory_backing(
            &mut x,
            memory,
            hugepages.map(|h| h.page_size),
            cells.as_ref().map_or(0, Vec::len),
            shared_memory,
        )?;
    }

    let smbios_serial = firmware.and_then(|f| f.serial.as_deref());
    if let Some(serial) = smbios_serial {
        x.open("sysinfo", &[("type", "smbios")]).open("system", &[]);
        x.text("entry", &[("name", "serial")], serial);
        x.close().close();
    }

    let machine = machine_type(domain)?;
    let efi = efi_firmware(domain);
    let secure = efi.is_some_and(|(code, _)| code == OVMF_CODE_SECURE);
    x.open("os", &[]);
    x.text("type", &[("arch", "x86_64"), ("machine", &machine)], "hvm");
    if let Some((code, vars)) = efi {
        let secure_attr = if secure { "yes" } else { "no" };
        x.text(
            "loader",
            &[
                ("readonly", "yes"),
                ("secure", secure_attr),
                ("type", "pflash"),
            ],
            code,
        );
        x.text(
            "nvram",
            &[("template", vars)],
            &nvram(spec, dir, input.name).display().to_string(),
        );
    }
    if let Some(kb) = firmware.and_then(|f| f.kernel_boot.as_ref()) {
        let container = kb.container.as_ref().ok_or_else(|| {
            Error::unsupported(
                "spec.domain.firmware.kernelBoot.container",
                "a kernel boot needs the container that holds the kernel",
            )
        })?;
        for (field, path) in [
            ("kernelPath", &container.kernel_path),
            ("initrdPath", &container.initrd_path),
        ] {
            if let Some(p) = path.as_deref().filter(|p| !p.starts_with('/')) {
                return Err(Error::unsupported(
                    format!("spec.domain.firmware.kernelBoot.container.{field}"),
                    format!("{p:?} is not an absolute path"),
                ));
            }
        }
        if let Some(kernel) = &container.kernel_path {
            x.text("kernel", &[], &in_root(input.kernel_root, kernel));
        }
        if let Some(initrd) = &container.initrd_path {
            x.text("initrd", &[], &in_root(input.kernel_root, initrd));
        }
        if let Some(args) = &kb.kernel_args {
            x.text("cmdline", &[], args);
        }
    }
    if let Some(bios) = firmware
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.bios.as_ref())
        && bios.use_serial == Some(true)
    {
        if domain.devices.autoattach_serial_console == Some(false) {
            return Err(Error::unsupported(
                "spec.domain.firmware.bootloader.bios.useSerial",
                "needs the serial console (autoattachSerialConsole is false)",
            ));
        }
        x.empty("bios", &[("useserial", "yes")]);
    }
    if smbios_serial.is_some() {
        x.empty("smbios", &[("mode", "sysinfo")]);
    }
    x.close();

    let acpi = domain
        .features
        .as_ref()
        .and_then(|f| f.acpi.as_ref())
        .map(|a| a.enabled.unwrap_or(true))
        .unwrap_or(true);
    // KubeVirt's `features.smm`: on when set unless disabled; Secure Boot needs it.
    let smm_asked = domain
        .features
        .as_ref()
        .and_then(|f| f.smm.as_ref())
        .map(|s| s.enabled.unwrap_or(true));
    if secure && smm_asked == Some(false) {
        return Err(Error::unsupported(
            "spec.domain.features.smm",
            "EFI Secure Boot requires SMM, which is disabled here",
        ));
    }
    let smm = secure || smm_asked == Some(true);
    // KubeVirt's realtime tuning: no PMU in the guest (its counters' exits disturb the
    // vCPUs); virt-handler gives the vCPU threads SCHED_FIFO once QEMU runs (realtime.rs).
    let no_pmu = domain.cpu.as_ref().is_some_and(|c| c.realtime.is_some());
    if acpi || smm || no_pmu {
        x.open("features", &[]);
        if acpi {
            x.empty("acpi", &[]);
        }
        if no_pmu {
            x.empty("pmu", &[("state", "off")]);
        }
        if smm {
            x.empty("smm", &[("state", "on")]);
        }
        x.close();
    }

    cpu(
        &mut x,
        domain,
        &topology,
        cells.as_deref(),
        input.virtualization,
    )?;
    clock::clock(&mut x, domain.clock.as_ref(), input.virtualization)?;
    x.text("on_poweroff", &[], "destroy");
    // KubeVirt's rebootPolicy: Terminate makes a guest reboot end the domain (QEMU runs
    // with -no-reboot), so the VMI ends and its VM's controller starts a new one.
    let on_reboot = match domain.reboot_policy {
        Some(crds::RebootPolicy::Terminate) => "destroy",
        Some(crds::RebootPolicy::Reboot) | None => "restart",
    };
    x.text("on_reboot", &[], on_reboot);
    x.text("on_crash", &[], "destroy");

    x.open("devices", &[]);
    // KubeVirt's blockMultiQueue: a queue per vCPU on every virtio disk.
    let queues = (domain.devices.block_multi_queue == Some(true)).then(|| topology.vcpus());
    let virtio_model = devices::virtio_model(&domain.devices);
    devices::disks(&mut x, &disks, iothreads.as_ref(), queues, virtio_model);
    filesystems::filesystems(&mut x, &domain.devices.filesystems, dir);
    let qemu_args = devices::interfaces(&mut x, spec, input.uid, dir, network.nics())?;
    if domain.devices.autoattach_serial_console != Some(false) {
        x.open("serial", &[("type", "unix")]);
        x.empty(
            "source",
            &[
                ("mode", "bind"),
                ("path", &dir.join(SERIAL_SOCKET).display().to_string()),
            ],
        );
        x.empty(
            "log",
            &[
                ("file", &dir.join(SERIAL_LOG).display().to_string()),
                ("append", "on"),
            ],
        );
        x.empty("target", &[("port", "0")]);
        x.close();
    }
    // The channels' virtio-serial controller, which libvirt adds as `virtio` when the
    // domain names none: named for a transitional model.
    if virtio_model != "virtio" {
        x.empty(
            "controller",
            &[
                ("type", "virtio-serial"),
                ("index", "0"),
                ("model", virtio_model),
            ],
        );
    }
    // The guest agent's channel, which KubeVirt adds to every domain; the launcher's
    // libvirt talks to the agent through it (docs/guest-agent.md).
    x.open("channel", &[("type", "unix")]);
    x.empty(
        "source",
        &[
            ("mode", "bind"),
            ("path", &dir.join(GUEST_AGENT_SOCKET).display().to_string()),
        ],
    );
    x.empty(
        "target",
        &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")],
    );
    x.close();
    // KubeVirt's downward metrics channel: QEMU binds its socket, the launcher connects
    // and answers the guest's requests.
    if let Some(socket) = crate::downward_metrics::channel_socket(spec, dir) {
        use ferrovirt_node_contract::downward_metrics::CHANNEL_NAME;
        x.open("channel", &[("type", "unix")]);
        x.empty(
            "source",
            &[("mode", "bind"), ("path", &socket.display().to_string())],
        );
        x.empty("target", &[("type", "virtio"), ("name", CHANNEL_NAME)]);
        x.close();
    }
    if domain.devices.autoattach_graphics_device != Some(false) {
        x.open("graphics", &[("type", "vnc")]);
        x.empty(
            "listen",
            &[
                ("type", "socket"),
                ("socket", &dir.join(VNC_SOCKET).display().to_string()),
            ],
        );
        x.close();
        let model = domain
            .devices
            .video
            .as_ref()
            .map(|v| v.type_)
            .unwrap_or_default();
        let mut attrs = vec![("type", model.as_str())];
        // Video memory for the models that have it (virtio-gpu has none).
        if model != crds::VideoType::Virtio {
            attrs.push(("vram", "16384"));
        }
        attrs.push(("heads", "1"));
        x.open("video", &[]).empty("model", &attrs).close();
    } else {
        x.open("video", &[])
            .empty("model", &[("type", "none")])
            .close();
    }
    if domain.devices.rng.is_some() {
        x.open("rng", &[("model", virtio_model)]);
        x.text("backend", &[("model", "random")], "/dev/urandom");
        x.close();
    }
    if let Some(w) = &domain.devices.watchdog {
        devices::watchdog(&mut x, w)?;
    }
    // KubeVirt adds the autoattached tablet in its VM controller only; here it also
    // reaches a VMI made without a VM.
    let autoattached = domain.devices.autoattached_input();
    let inputs: Vec<crds::Input> = domain
        .devices
        .inputs
        .iter()
        .cloned()
        .chain(autoattached)
        .collect();
    devices::inputs(&mut x, &inputs);
    if crds::Tpm::present(domain.devices.tpm.as_ref()) {
        devices::tpm(&mut x, domain.devices.tpm.as_ref())?;
    }
    // KubeVirt attaches a balloon unless told not to; the guest reports its memory use
    // through it every 10 s.
    if domain.devices.autoattach_mem_balloon != Some(false) {
        x.open("memballoon", &[("model", virtio_model)]);
        x.empty("stats", &[("period", "10")]);
        x.close();
    } else {
        x.empty("memballoon", &[("model", "none")]);
    }
    x.close();
    if !qemu_args.is_empty() {
        x.open("qemu:commandline", &[]);
        for arg in &qemu_args {
            x.empty("qemu:arg", &[("value", arg)]);
        }
        x.close();
    }
    x.close();
    Ok(x.finish())
}

/// Guest memory in KiB: `memory.guest`, else the memory request.
fn memory_kib(domain: &DomainSpec) -> Result<u64> {
    let (field, q) = if let Some(q) = domain.memory.as_ref().and_then(|m| m.guest.as_ref()) {
        ("spec.domain.memory.guest", q)
    } else if let Some(q) = domain
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("memory"))
    {
        ("spec.domain.resources.requests.memory", q)
    } else {
        return Err(Error::unsupported(
            "spec.domain.memory.guest",
            "set memory.guest or resources.requests.memory",
        ));
    };
    let bytes = quantity::bytes(q)
        .filter(|b| *b >= 1 << 20)
        .ok_or_else(|| {
            Error::unsupported(
                field,
                format!("{:?} is not a memory size of at least 1Mi", q.0),
            )
        })?;
    Ok(bytes.div_ceil(1024))
}

/// The guest's memory from a memfd: KubeVirt's memory backing for hugepages, the guest's
/// memory in pages of `hugepages` from the node's pool (no hugetlbfs mount needed, as
/// KubeVirt's default; the pages are the ones the launcher pod requests as
/// `hugepages-<size>`), and for `shared` memory, which virtiofsd maps (filesystems). With
/// `numa_cells` guest NUMA cells (NUMA passthrough), the pages of each cell are named and
/// allocated at start, as KubeVirt does.
fn memory_backing(
    x: &mut xml::Xml,
    memory_kib: u64,
    hugepages: Option<crds::HugepageSize>,
    numa_cells: usize,
    shared: bool,
) -> Result<()> {
    x.open("memoryBacking", &[]);
    if let Some(size) = hugepages {
        let page_kib = size.bytes() / 1024;
        if !memory_kib.is_multiple_of(page_kib) {
            return Err(Error::unsupported(
                "spec.domain.memory.hugepages.pageSize",
                format!(
                    "the guest's memory ({memory_kib} KiB) is not a multiple of the page size {}",
                    size.as_str()
                ),
            ));
        }
        x.open("hugepages", &[]);
        let size = page_kib.to_string();
        if numa_cells == 0 {
            x.empty("page", &[("size", &size), ("unit", "KiB")]);
        }
        for cell in 0..numa_cells {
            x.empty(
                "page",
                &[
                    ("size", &size),
                    ("unit", "KiB"),
                    ("nodeset", &cell.to_string()),
                ],
            );
        }
        x.close();
    }
    x.empty("source", &[("type", "memfd")]);
    if shared {
        x.empty("access", &[("mode", "shared")]);
    }
    if numa_cells > 0 {
        x.empty("allocation", &[("mode", "immediate")]);
    }
    x.close();
    Ok(())
}

#[derive(Debug)]
struct Topology {
    sockets: u32,
    cores: u32,
    threads: u32,
    /// `cpu.maxSockets`: the CPU hotplug headroom.
    max_sockets: Option<u32>,
}

impl Topology {
    /// The vCPUs the guest starts with.
    fn vcpus(&self) -> u32 {
        self.sockets * self.cores * self.threads
    }

    /// The vCPUs the guest's machine has room for: the headroom's sockets when set.
    fn max_vcpus(&self) -> u32 {
        self.max_sockets.unwrap_or(self.sockets) * self.cores * self.threads
    }
}

/// The `cpu` of the first of `order`'s sections that sets one, in whole CPUs rounded up
/// ([`DomainSpec::resource_cpus`]), with the field it was read from; `None` when neither
/// does. The error names the field.
pub(crate) fn resource_cpus(
    domain: &DomainSpec,
    order: [Resources; 2],
) -> Result<Option<(String, u32)>> {
    let Some((section, q, cpus)) = domain.resource_cpus(order) else {
        return Ok(None);
    };
    let field = format!("spec.domain.resources.{}.cpu", section.field());
    let refuse = |why: &str| Error::unsupported(field.clone(), format!("{:?} {why}", q.0));
    let cpus = cpus.ok_or_else(|| refuse("is not a CPU amount"))?;
    let cpus = u32::try_from(cpus).map_err(|_| refuse("is too many CPUs"))?;
    Ok(Some((field, cpus)))
}

/// sockets x cores x threads; without any, one socket per CPU of `resources.limits.cpu`
/// (else `requests.cpu`), rounded up, at least one.
fn topology(domain: &DomainSpec) -> Result<Topology> {
    let cpu = domain.cpu.clone().unwrap_or_default();
    if cpu.sockets.is_none() && cpu.cores.is_none() && cpu.threads.is_none() {
        let sockets = match resource_cpus(domain, [Resources::Limits, Resources::Requests])? {
            Some((field, 0)) => {
                return Err(Error::unsupported(
                    field,
                    "must be at least one CPU: without a CPU topology the guest gets one \
                     socket per CPU",
                ));
            }
            Some((_, n)) => n,
            None => 1,
        };
        return with_headroom(Topology {
            sockets,
            cores: 1,
            threads: 1,
            max_sockets: cpu.max_sockets,
        });
    }
    let t = Topology {
        sockets: cpu.sockets.unwrap_or(1),
        cores: cpu.cores.unwrap_or(1),
        threads: cpu.threads.unwrap_or(1),
        max_sockets: cpu.max_sockets,
    };
    if t.sockets == 0 || t.cores == 0 || t.threads == 0 {
        return Err(Error::unsupported(
            "spec.domain.cpu",
            "sockets, cores and threads must be at least 1",
        ));
    }
    if t.vcpus() > 512 {
        return Err(Error::unsupported(
            "spec.domain.cpu",
            format!("{} vCPUs is more than 512", t.vcpus()),
        ));
    }
    with_headroom(t)
}

/// KubeVirt's CPU hotplug headroom: `maxSockets` at least the sockets, the most vCPUs at
/// most 512.
fn with_headroom(t: Topology) -> Result<Topology> {
    let Some(max) = t.max_sockets else {
        return Ok(t);
    };
    if max < t.sockets {
        return Err(Error::unsupported(
            "spec.domain.cpu.maxSockets",
            format!("{max} is fewer than the guest's {} sockets", t.sockets),
        ));
    }
    if t.max_vcpus() > 512 {
        return Err(Error::unsupported(
            "spec.domain.cpu.maxSockets",
            format!("{} vCPUs at most is more than 512", t.max_vcpus()),
        ));
    }
    Ok(t)
}

fn cpu(
    x: &mut xml::Xml,
    domain: &DomainSpec,
    t: &Topology,
    cells: Option<&[numa::Cell]>,
    virt: Virtualization,
) -> Result<()> {
    let model = domain.cpu.as_ref().and_then(|c| c.model.as_deref());
    let features = domain.cpu.as_ref().map_or(&[][..], |c| &c.features[..]);
    let topo = [
        ("sockets", t.max_sockets.unwrap_or(t.sockets).to_string()),
        ("dies", "1".to_owned()),
        ("cores", t.cores.to_string()),
        ("threads", t.threads.to_string()),
    ];
    let topo: Vec<(&str, &str)> = topo.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match (model, virt) {
        (Some(m @ ("host-passthrough" | "host-model")), Virtualization::Emulation) => {
            return Err(Error::unsupported(
                "spec.domain.cpu.model",
                format!("{m} needs KVM; this guest runs under software emulation"),
            ));
        }
        (Some("host-passthrough"), _) => {
            x.open(
                "cpu",
                &[
                    ("mode", "host-passthrough"),
                    ("check", "none"),
                    ("migratable", "on"),
                ],
            );
        }
        // KubeVirt's default model is host-model.
        (Some("host-model") | None, Virtualization::Kvm) => {
            x.open("cpu", &[("mode", "host-model"), ("check", "partial")]);
        }
        (None, Virtualization::Emulation) if features.is_empty() => {
            // QEMU's default model for TCG.
            x.open("cpu", &[]);
        }
        (None, Virtualization::Emulation) => {
            // Features need a model to apply to: QEMU's default for TCG, named.
            x.open(
                "cpu",
                &[("mode", "custom"), ("match", "exact"), ("check", "partial")],
            );
            x.text("model", &[("fallback", "forbid")], TCG_DEFAULT_MODEL);
        }
        (Some(m), _) => {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::unsupported(
                    "spec.domain.cpu.model",
                    format!("{m:?} is not a CPU model name"),
                ));
            }
            x.open(
                "cpu",
                &[("mode", "custom"), ("match", "exact"), ("check", "partial")],
            );
            x.text("model", &[("fallback", "forbid")], m);
        }
    }
    x.empty("topology", &topo);
    for f in features {
        let policy = f
            .policy
            .map_or_else(|| "require".to_owned(), |p| crds::wire_name(&p));
        x.empty("feature", &[("policy", &policy), ("name", &f.name)]);
    }
    if let Some(cells) = cells {
        numa::cpu_cells(x, cells);
    }
    x.close();
    Ok(())
}

/// The machine type: q35 (the default) or a versioned `pc-q35-*`; other types lack the
/// PCIe and SATA controllers the device model assumes.
fn machine_type(domain: &DomainSpec) -> Result<String> {
    let m = domain
        .machine
        .as_ref()
        .and_then(|m| m.machine_type.as_deref())
        .unwrap_or("q35");
    let m = if m.is_empty() { "q35" } else { m };
    let versioned = m
        .strip_prefix("pc-q35-")
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if m == "q35" || versioned {
        Ok(m.to_owned())
    } else {
        Err(Error::unsupported(
            "spec.domain.machine.type",
            format!("{m:?} is not supported; use q35 or pc-q35-<version>"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(resources: serde_json::Value) -> DomainSpec {
        serde_json::from_value(serde_json::json!({"devices": {}, "resources": resources})).unwrap()
    }

    #[test]
    fn without_a_topology_the_guest_gets_a_socket_per_cpu_of_limits_else_requests() {
        let sockets = |r| topology(&domain(r)).unwrap().sockets;
        assert_eq!(sockets(serde_json::json!({})), 1);
        assert_eq!(
            sockets(serde_json::json!({"requests": {"cpu": "1500m"}})),
            2
        );
        let both = serde_json::json!({"requests": {"cpu": "1"}, "limits": {"cpu": "3"}});
        assert_eq!(sockets(both.clone()), 3);
        // The IOThreads pool reads the same amounts the other way round.
        let cpus = resource_cpus(&domain(both), [Resources::Requests, Resources::Limits]);
        assert_eq!(
            cpus.unwrap(),
            Some(("spec.domain.resources.requests.cpu".into(), 1))
        );
    }

    #[test]
    fn a_cpu_amount_without_a_cpu_is_refused_naming_the_field_read() {
        let err = topology(&domain(serde_json::json!({"limits": {"cpu": "0"}}))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("spec.domain.resources.limits.cpu"), "{msg}");
        let err = topology(&domain(serde_json::json!({"requests": {"cpu": "1e12"}})));
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("spec.domain.resources.requests.cpu"), "{msg}");
        assert!(msg.contains("too many CPUs"), "{msg}");
    }
}
