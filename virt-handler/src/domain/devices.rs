//! Disks and network interfaces.

use crds::{DiskBus, InterfaceModel, VirtualMachineInstanceSpec};

use super::xml::Xml;
use ferrovirt_node_contract::paths::VmiDir;

use crate::network::Backend;
use crate::volumes::Planned;
use crate::{Error, Result};

/// The model of every virtio device of the domain (disks, NICs, the virtio-serial and
/// virtio-scsi controllers, the RNG, the balloon), as KubeVirt's converter picks it:
/// `virtio-transitional` with `useVirtioTransitional` (legacy and modern virtio, which
/// libvirt puts on a conventional PCI slot, behind a PCIe-to-PCI bridge it adds on q35),
/// else libvirt's `virtio`, modern only on q35's PCIe ports (what KubeVirt's
/// `virtio-non-transitional` gives the guest). KubeVirt leaves virtio inputs, VSOCK,
/// virtiofs and virtio-gpu out (they have no transitional model or it keeps theirs).
pub fn virtio_model(devices: &crds::Devices) -> &'static str {
    if devices.use_virtio_transitional == Some(true) {
        "virtio-transitional"
    } else {
        "virtio"
    }
}

/// libvirt's disk names: a..z, aa..zz, ...
fn dev_name(prefix: &str, mut index: usize) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8(letters).expect("ascii"))
}

/// A disk of the domain: one of the VMI's disks, or a virtio disk for a volume without one.
pub struct DiskPlan<'a> {
    name: &'a str,
    cdrom: bool,
    bus: DiskBus,
    read_only: bool,
    tray: Option<crds::TrayState>,
    boot_order: Option<u32>,
    serial: Option<&'a str>,
    dedicated_io_thread: bool,
    volume: &'a Planned,
}

impl DiskPlan<'_> {
    /// The disk as the IOThreads count sees it.
    pub fn threads(&self) -> super::iothreads::DiskThreads {
        super::iothreads::DiskThreads {
            bus: self.bus,
            dedicated: self.dedicated_io_thread,
        }
    }
}

/// The domain's disks in KubeVirt's order: the VMI's, then a virtio disk for each volume
/// without one (KubeVirt's `SetDefaultVolumeDisk`).
pub fn plan_disks<'a>(
    spec: &'a VirtualMachineInstanceSpec,
    volumes: &'a [Planned],
) -> Result<Vec<DiskPlan<'a>>> {
    let mut plans = Vec::new();
    for (i, d) in spec.domain.devices.disks.iter().enumerate() {
        let field = |f: &str| format!("spec.domain.devices.disks[{i}].{f}");
        let volume = volumes.iter().find(|v| v.name == d.name).ok_or_else(|| {
            Error::unsupported(field("name"), format!("no volume named {:?}", d.name))
        })?;
        let tray = d.cdrom.as_ref().and_then(|c| c.tray);
        let (cdrom, bus, read_only) = match (&d.disk, &d.cdrom) {
            (Some(_), Some(_)) => {
                return Err(Error::unsupported(
                    field("cdrom"),
                    "set at most one of disk and cdrom",
                ));
            }
            (_, Some(c)) => {
                let bus = c.bus.unwrap_or(DiskBus::Sata);
                if bus == DiskBus::Virtio {
                    return Err(Error::unsupported(
                        field("cdrom.bus"),
                        "a cdrom needs the sata or scsi bus",
                    ));
                }
                // As KubeVirt: read-only unless `readonly: false`.
                (true, bus, c.read_only.unwrap_or(true))
            }
            (Some(t), None) => (
                false,
                t.bus.unwrap_or(DiskBus::Virtio),
                t.read_only.unwrap_or(false),
            ),
            (None, None) => (false, DiskBus::Virtio, false),
        };
        if let Some(s) = &d.serial
            && (s.is_empty()
                || s.len() > 20
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(Error::unsupported(
                field("serial"),
                format!("{s:?}: use up to 20 letters, digits, '-', '_', '.'"),
            ));
        }
        let dedicated_io_thread = d.dedicated_io_thread == Some(true);
        if dedicated_io_thread && (cdrom || bus != DiskBus::Virtio) {
            return Err(Error::unsupported(
                field("dedicatedIOThread"),
                format!(
                    "IOThreads are not supported for disks on a {} bus",
                    crds::wire_name(&bus)
                ),
            ));
        }
        plans.push(DiskPlan {
            name: &d.name,
            cdrom,
            bus,
            read_only: read_only || volume.read_only,
            tray,
            boot_order: d.boot_order,
            serial: d.serial.as_deref(),
            dedicated_io_thread,
            volume,
        });
    }
    // A volume without a disk gets a virtio disk, as in KubeVirt.
    for v in volumes {
        if !spec.domain.devices.disks.iter().any(|d| d.name == v.name) {
            plans.push(DiskPlan {
                name: &v.name,
                cdrom: false,
                bus: DiskBus::Virtio,
                read_only: v.read_only,
                tray: None,
                boot_order: None,
                serial: None,
                dedicated_io_thread: false,
                volume: v,
            });
        }
    }
    let mut orders: Vec<u32> = plans.iter().filter_map(|p| p.boot_order).collect();
    orders.sort_unstable();
    if orders.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::unsupported(
            "spec.domain.devices.disks.bootOrder",
            "boot orders must be unique",
        ));
    }
    Ok(plans)
}

/// The disks' devices. Virtio disks get their IOThread (`iothreads`, one entry per plan)
/// and, with `queues`, that many virtio-blk queues (`blockMultiQueue`).
pub fn disks(
    x: &mut Xml,
    plans: &[DiskPlan],
    iothreads: Option<&super::iothreads::IoThreads>,
    queues: Option<u32>,
    virtio_model: &str,
) {
    let (mut vd, mut sd) = (0, 0);
    for (i, p) in plans.iter().enumerate() {
        let (dev, bus) = match p.bus {
            DiskBus::Virtio => (dev_name("vd", post_inc(&mut vd)), "virtio"),
            DiskBus::Sata => (dev_name("sd", post_inc(&mut sd)), "sata"),
            DiskBus::Scsi => (dev_name("sd", post_inc(&mut sd)), "scsi"),
        };
        let device = if p.cdrom { "cdrom" } else { "disk" };
        // A drive whose tray is open holds no medium: QEMU cannot start a drive with its
        // tray open, so the domain has the drive empty (no source), as an open tray
        // leaves it; the guest sees the drive and no medium.
        let open_tray = p.tray == Some(crds::TrayState::Open);
        // A block claim's device is a block disk (KubeVirt's); an open tray has no source.
        let block = p.volume.is_block() && !open_tray;
        let kind = if block { "block" } else { "file" };
        let mut attrs = vec![("type", kind), ("device", device)];
        // libvirt's default model needs no attribute; a transitional one does.
        if p.bus == DiskBus::Virtio && virtio_model != "virtio" {
            attrs.push(("model", virtio_model));
        }
        x.open("disk", &attrs);
        let format = if open_tray {
            "raw"
        } else {
            p.volume.format.as_str()
        };
        let mut driver = vec![
            ("name", "qemu".to_owned()),
            ("type", format.to_owned()),
            ("discard", "unmap".to_owned()),
        ];
        if p.bus == DiskBus::Virtio {
            if let Some(id) = iothreads.and_then(|t| t.per_disk[i]) {
                driver.push(("iothread", id.to_string()));
            }
            if let Some(q) = queues {
                driver.push(("queues", q.to_string()));
            }
        }
        let driver: Vec<(&str, &str)> = driver.iter().map(|(k, v)| (*k, v.as_str())).collect();
        x.empty("driver", &driver);
        if !open_tray {
            let attr = if block { "dev" } else { "file" };
            x.empty("source", &[(attr, &p.volume.path.display().to_string())]);
        }
        // The tray's state as the VMI gives it.
        let mut target = vec![("dev", dev.as_str()), ("bus", bus)];
        if let Some(t) = p.tray {
            target.push(("tray", t.as_str()));
        }
        x.empty("target", &target);
        if p.read_only {
            x.empty("readonly", &[]);
        }
        if let Some(serial) = p.serial {
            x.text("serial", &[], serial);
        }
        if let Some(order) = p.boot_order {
            x.empty("boot", &[("order", &order.to_string())]);
        }
        x.empty("alias", &[("name", &format!("ua-{}", p.name))]);
        x.close();
    }
    if plans.iter().any(|p| p.bus == DiskBus::Scsi) {
        // libvirt's `virtio` SCSI model is `virtio-scsi`; the transitional one keeps its name.
        let model = match virtio_model {
            "virtio" => "virtio-scsi",
            other => other,
        };
        x.empty(
            "controller",
            &[("type", "scsi"), ("index", "0"), ("model", model)],
        );
    }
}

fn post_inc(n: &mut usize) -> usize {
    *n += 1;
    *n - 1
}

/// The guest's NICs. On taps (`nics`, from the network plan: the launcher has a pod
/// network namespace of its own) each is an `ethernet` interface on its tap; without
/// (devnode: the launcher shares the node's namespace) QEMU's user-mode networking
/// (slirp) stands in for every binding, and `ports` are refused.
///
/// passt NICs (Debian 12's libvirt has its passt backend disabled) are not libvirt
/// devices: QEMU joins the passt the launcher starts by its socket (`-netdev stream`,
/// `-device` with the model and MAC), arguments returned for libvirt's `qemu:commandline`.
pub fn interfaces(
    x: &mut Xml,
    spec: &VirtualMachineInstanceSpec,
    uid: &str,
    vmi_dir: &std::path::Path,
    nics: Option<&[crate::network::Nic]>,
) -> Result<Vec<String>> {
    let mut qemu_args = Vec::new();
    for (i, iface) in spec.domain.devices.interfaces.iter().enumerate() {
        let field = |f: &str| format!("spec.domain.devices.interfaces[{i}].{f}");
        let network = spec
            .networks
            .iter()
            .find(|n| n.name == iface.name)
            .ok_or_else(|| {
                Error::unsupported(field("name"), format!("no network named {:?}", iface.name))
            })?;
        let net_index = spec
            .networks
            .iter()
            .position(|n| n.name == iface.name)
            .unwrap_or(0);
        let Some(pod) = &network.pod else {
            return Err(Error::unsupported(
                format!("spec.networks[{net_index}]"),
                "only the pod network is supported",
            ));
        };
        let virtio = iface.model.unwrap_or(InterfaceModel::Virtio) == InterfaceModel::Virtio;
        let model = match iface.model.unwrap_or(InterfaceModel::Virtio) {
            InterfaceModel::Virtio => virtio_model(&spec.domain.devices),
            InterfaceModel::E1000 => "e1000",
            InterfaceModel::E1000e => "e1000e",
            InterfaceModel::Rtl8139 => "rtl8139",
        };
        if let Some(nics) = nics {
            let nic = nics
                .iter()
                .find(|n| n.interface == iface.name)
                .ok_or_else(|| {
                    Error::unsupported(field("name"), "the network plan has no NIC for it")
                })?;
            match &nic.backend {
                Backend::Tap(tap) => {
                    x.open("interface", &[("type", "ethernet")]);
                    x.empty("mac", &[("address", &nic.mac)]);
                    x.empty("target", &[("dev", tap), ("managed", "no")]);
                    x.empty("model", &[("type", model)]);
                    if let Some(queues) = nic.queues {
                        // libvirt opens the multi-queue tap once per queue pair.
                        x.empty("driver", &[("queues", &queues.to_string())]);
                    }
                    x.empty("alias", &[("name", &format!("ua-{}", iface.name))]);
                    x.close();
                }
                Backend::Passt { .. } => {
                    let socket = VmiDir::new(vmi_dir).passt_socket(&iface.name);
                    qemu_args.extend(passt_args(&iface.name, &nic.mac, model, &socket));
                }
            }
            continue;
        }
        if !iface.ports.is_empty() {
            return Err(Error::unsupported(
                field("ports"),
                "port forwarding needs the launcher pod's own network namespace; this node \
                 runs launchers in its own (user-mode networking forwards no ports)",
            ));
        }
        if spec.domain.devices.network_interface_multiqueue == Some(true) && virtio {
            return Err(Error::unsupported(
                "spec.domain.devices.networkInterfaceMultiqueue",
                "multi-queue needs a tap in the launcher pod's own network namespace; this \
                 node runs launchers in its own (user-mode networking has one queue)",
            ));
        }
        let mac = match &iface.mac_address {
            Some(m) => m.replace('-', ":").to_ascii_lowercase(),
            None => crate::network::mac_address(uid, &iface.name),
        };
        x.open("interface", &[("type", "user")]);
        x.empty("mac", &[("address", &mac)]);
        x.empty("model", &[("type", model)]);
        if let Some(cidr) = &pod.vm_network_cidr {
            let (addr, prefix) = parse_cidr(cidr).ok_or_else(|| {
                Error::unsupported(
                    format!("spec.networks[{net_index}].pod.vmNetworkCIDR"),
                    format!("{cidr:?} is not an IPv4 CIDR"),
                )
            })?;
            x.empty(
                "ip",
                &[
                    ("family", "ipv4"),
                    ("address", &addr),
                    ("prefix", &prefix.to_string()),
                ],
            );
        }
        x.empty("alias", &[("name", &format!("ua-{}", iface.name))]);
        x.close();
    }
    Ok(qemu_args)
}

/// libvirt's namespace for QEMU arguments.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// The PCI slot of the passt NIC on q35's root bus (`pcie.0`): libvirt does not know the
/// device, and QEMU may create it before libvirt's own, which have fixed addresses (VGA
/// at 0x1, root ports from 0x2 on, the chipset's at 0x1b-0x1f), so it gets a slot
/// libvirt's allocation reaches only with a hundred devices. KubeVirt allows one
/// interface on the pod network, so one slot.
const PASST_SLOT: &str = "0x10";

/// QEMU's arguments for a NIC on passt's socket: a stream netdev (QEMU 7.2) and the
/// device, named as libvirt would name the interface (`ua-<name>`).
fn passt_args(name: &str, mac: &str, model: &str, socket: &std::path::Path) -> [String; 4] {
    let device = match model {
        "virtio" => "virtio-net-pci",
        "virtio-transitional" => "virtio-net-pci-transitional",
        other => other,
    };
    [
        "-netdev".into(),
        format!(
            "stream,id=hostua-{name},server=off,addr.type=unix,addr.path={}",
            socket.display()
        ),
        "-device".into(),
        format!(
            "{device},netdev=hostua-{name},id=ua-{name},mac={mac},bus=pcie.0,addr={PASST_SLOT}"
        ),
    ]
}

fn parse_cidr(cidr: &str) -> Option<(String, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=30).contains(p))?;
    Some((addr.to_string(), prefix))
}

/// KubeVirt's watchdog: the Intel 6300ESB with its action (`reset` when unset, as
/// KubeVirt's defaults set it), named by the device's alias.
pub fn watchdog(x: &mut Xml, w: &crds::Watchdog) -> Result<()> {
    let Some(esb) = &w.i6300esb else {
        return Err(Error::unsupported(
            "spec.domain.devices.watchdog",
            format!("watchdog {} has no model: set i6300esb", w.name),
        ));
    };
    let action = esb
        .action
        .map_or_else(|| "reset".to_owned(), |a| crds::wire_name(&a));
    x.open("watchdog", &[("model", "i6300esb"), ("action", &action)]);
    x.empty("alias", &[("name", &format!("ua-{}", w.name))]);
    x.close();
    Ok(())
}

/// The input devices (tablets, aliased `ua-<name>`) and the USB controller: QEMU's xHCI
/// when a device needs the USB bus, as KubeVirt decides it, else none at all.
/// KubeVirt's TPM: a TPM 2.0 on the TIS interface, emulated by swtpm, which libvirt
/// starts beside QEMU with its state in the per-VMI libvirt root (gone with the VMI). A
/// persistent one is KubeVirt's CRB TPM whose state libvirt keeps (`persistent_state`), on
/// the backend-storage claim ([`crate::backend_storage`]).
pub fn tpm(x: &mut Xml, tpm: Option<&crds::Tpm>) -> Result<()> {
    let mut backend = vec![("type", "emulator"), ("version", "2.0")];
    let model = if crds::Tpm::persistent(tpm) {
        backend.push(("persistent_state", "yes"));
        "tpm-crb"
    } else {
        "tpm-tis"
    };
    x.open("tpm", &[("model", model)]);
    x.empty("backend", &backend);
    x.close();
    Ok(())
}

pub fn inputs(x: &mut Xml, inputs: &[crds::Input]) {
    for input in inputs {
        let mut attrs = vec![("type", "tablet")];
        if crds::InputBus::is_usb(input.bus) {
            attrs.push(("bus", "usb"));
        } else {
            attrs.extend([("bus", "virtio"), ("model", "virtio")]);
        }
        x.open("input", &attrs);
        x.empty("alias", &[("name", &format!("ua-{}", input.name))]);
        x.close();
    }
    let usb = inputs.iter().any(|i| crds::InputBus::is_usb(i.bus));
    let model = if usb { "qemu-xhci" } else { "none" };
    x.empty("controller", &[("type", "usb"), ("model", model)]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_multi_queue_nic_opens_its_tap_per_queue_and_user_networking_refuses_it() {
        let spec: crds::VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}],
                                   "networkInterfaceMultiqueue": true}},
            "networks": [{"name": "default", "pod": {}}]
        }))
        .unwrap();
        let nic = crate::network::Nic {
            interface: "default".into(),
            mac: "02:00:00:00:00:01".into(),
            backend: crate::network::Backend::Tap("tap0".into()),
            queues: Some(4),
        };
        let mut x = super::Xml::new();
        let dir = std::path::Path::new("/vmi");
        super::interfaces(&mut x, &spec, "uid", dir, Some(&[nic])).unwrap();
        let xml = x.finish();
        assert!(xml.contains("<driver queues='4'/>"), "{xml}");
        // Without the pod's namespace (devnode): user-mode networking, one queue.
        let mut x = super::Xml::new();
        let err = super::interfaces(&mut x, &spec, "uid", dir, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.domain.devices.networkInterfaceMultiqueue"),
            "{err}"
        );
    }

    #[test]
    fn a_transitional_passt_nic_is_qemus_transitional_virtio_net() {
        let socket = std::path::Path::new("/vmi/passt.sock");
        let args = |model| super::passt_args("default", "02:00:00:00:00:01", model, socket);
        assert!(
            args("virtio")[3].starts_with("virtio-net-pci,"),
            "{:?}",
            args("virtio")
        );
        let transitional = args("virtio-transitional");
        assert!(
            transitional[3].starts_with("virtio-net-pci-transitional,"),
            "{transitional:?}"
        );
    }

    #[test]
    fn device_names_follow_libvirt() {
        assert_eq!(super::dev_name("vd", 0), "vda");
        assert_eq!(super::dev_name("vd", 25), "vdz");
        assert_eq!(super::dev_name("sd", 26), "sdaa");
        assert_eq!(super::dev_name("sd", 27), "sdab");
    }

    #[test]
    fn a_usb_tablet_brings_the_xhci_controller_and_a_virtio_one_does_not() {
        let tablet = |name: &str, bus| crds::Input {
            name: name.into(),
            type_: crds::InputType::Tablet,
            bus,
        };
        let xml = |inputs: &[crds::Input]| {
            let mut x = super::Xml::new();
            super::inputs(&mut x, inputs);
            x.finish()
        };
        let none = xml(&[]);
        assert!(
            none.contains("<controller type='usb' model='none'/>"),
            "{none}"
        );
        let virtio = xml(&[tablet("t", Some(crds::InputBus::Virtio))]);
        assert!(
            virtio.contains("<input type='tablet' bus='virtio' model='virtio'>"),
            "{virtio}"
        );
        assert!(virtio.contains("<alias name='ua-t'/>"), "{virtio}");
        assert!(virtio.contains("model='none'"), "{virtio}");
        for bus in [None, Some(crds::InputBus::Usb), Some(crds::InputBus::Unset)] {
            let usb = xml(&[tablet("t", Some(crds::InputBus::Virtio)), tablet("u", bus)]);
            assert!(usb.contains("<input type='tablet' bus='usb'>"), "{usb}");
            assert!(
                usb.contains("<controller type='usb' model='qemu-xhci'/>"),
                "{usb}"
            );
        }
    }
}
