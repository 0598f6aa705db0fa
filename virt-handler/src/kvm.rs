//! Does KVM really run a guest here? `/dev/kvm` can exist while a KVM guest hangs (nested
//! virtualization without support), so the probe runs a few instructions in 64-bit mode
//! and a `hlt` under KVM_RUN in a child process (`virt-handler probe-kvm`) and kills it
//! after a timeout.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmStatus {
    Usable,
    /// Why not, for logs, labels' neighbours and the VMI failure message.
    Unusable(String),
}

impl KvmStatus {
    pub fn usable(&self) -> bool {
        *self == KvmStatus::Usable
    }
}

// ioctl numbers from <linux/kvm.h> (x86_64).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_SET_REGS: libc::c_ulong = 0x4090_AE82;
const KVM_GET_SREGS: libc::c_ulong = 0x8138_AE83;
const KVM_SET_SREGS: libc::c_ulong = 0x4138_AE84;
const KVM_EXIT_HLT: u32 = 5;
const SREGS_SIZE: usize = 312;

#[repr(C)]
struct UserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

fn ioctl(
    fd: &OwnedFd,
    request: libc::c_ulong,
    arg: libc::c_ulong,
    what: &str,
) -> Result<i32, String> {
    // SAFETY: each call passes an argument of the size its request number encodes.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if ret < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(ret)
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful ioctl that creates a descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Guest physical layout of the probe: page tables, then code.
const MEM_SIZE: usize = 0x10000;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const CODE: u64 = 0x8000;

/// The probe's guest code, in 64-bit mode: count a register down from 2^22, then `hlt`.
/// Hardware virtualization does that in milliseconds; the broken nested KVM of these
/// machines runs real mode but crawls through this loop (about 3 s per 2^20 rounds,
/// measured), and a Linux guest never gets through its boot.
///   mov ecx, 0x400000 ; 1: dec ecx ; jnz 1b ; hlt
const LONG_MODE_CODE: &[u8] = &[0xb9, 0x00, 0x00, 0x40, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0xf4];

fn segment(sregs: &mut [u8], index: usize, selector: u16, type_: u8, long: bool) {
    let s = &mut sregs[index * 24..index * 24 + 24];
    s[0..8].copy_from_slice(&0u64.to_ne_bytes()); // base
    s[8..12].copy_from_slice(&0xffff_ffffu32.to_ne_bytes()); // limit
    s[12..14].copy_from_slice(&selector.to_ne_bytes());
    s[14] = type_;
    s[15] = 1; // present
    s[16] = 0; // dpl
    s[17] = u8::from(!long); // db
    s[18] = 1; // s: code or data
    s[19] = u8::from(long); // l
    s[20] = 1; // g
    s[21] = 0; // avl
    s[22] = 0; // unusable
}

/// Runs a few instructions in 64-bit long mode with paging under KVM, in this process,
/// and expects the vCPU to exit with HLT. Real mode alone is not enough: on some nested
/// setups SeaBIOS runs under KVM and the kernel then hangs. Blocks forever when KVM
/// hangs: call it only in the probe child.
pub fn run_guest(dev: &Path) -> Result<(), String> {
    let kvm: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("open {}: {e}", dev.display()))?
        .into();
    let version = ioctl(&kvm, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")?;
    if version != 12 {
        return Err(format!("KVM API version {version}, expected 12"));
    }
    let vm = owned(ioctl(&kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM")?);

    // SAFETY: an anonymous private mapping, checked below, never unmapped (process exits).
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(format!(
            "mmap guest memory: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `mem` is MEM_SIZE writable bytes; every offset below is inside it.
    let guest = unsafe { std::slice::from_raw_parts_mut(mem as *mut u8, MEM_SIZE) };
    let put = |g: &mut [u8], at: u64, v: u64| {
        g[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    // Identity-map the first 2 MiB with one large page: present | writable (| large).
    put(guest, PML4, PDPT | 0x3);
    put(guest, PDPT, PD | 0x3);
    put(guest, PD, 0x83);
    guest[CODE as usize..CODE as usize + LONG_MODE_CODE.len()].copy_from_slice(LONG_MODE_CODE);
    let region = UserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
    };
    ioctl(
        &vm,
        KVM_SET_USER_MEMORY_REGION,
        &region as *const _ as libc::c_ulong,
        "KVM_SET_USER_MEMORY_REGION",
    )?;

    let vcpu = owned(ioctl(&vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")?);
    let run_size = ioctl(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")? as usize;
    // SAFETY: the kernel's shared kvm_run area of the vCPU, of the size it reported.
    let run = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            run_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu.as_raw_fd(),
            0,
        )
    };
    if run == libc::MAP_FAILED {
        return Err(format!("mmap kvm_run: {}", std::io::Error::last_os_error()));
    }

    // struct kvm_sregs: 8 segments of 24 bytes (cs ds es fs gs ss tr ldt), gdt, idt,
    // then cr0 @224, cr3 @240, cr4 @248, efer @264.
    let mut sregs = [0u8; SREGS_SIZE];
    ioctl(
        &vcpu,
        KVM_GET_SREGS,
        sregs.as_mut_ptr() as libc::c_ulong,
        "KVM_GET_SREGS",
    )?;
    segment(&mut sregs, 0, 0x8, 0xb, true); // cs: execute/read, accessed, 64-bit
    for data in 1..=5 {
        segment(&mut sregs, data, 0x10, 0x3, false); // ds es fs gs ss: read/write, accessed
    }
    let cr0: u64 = 1 | 0x2 | 0x10 | 0x20 | 0x1_0000 | 0x8000_0000; // PE MP ET NE WP PG
    sregs[224..232].copy_from_slice(&cr0.to_ne_bytes());
    sregs[240..248].copy_from_slice(&PML4.to_ne_bytes());
    sregs[248..256].copy_from_slice(&0x20u64.to_ne_bytes()); // cr4.PAE
    sregs[264..272].copy_from_slice(&0x500u64.to_ne_bytes()); // efer: LME | LMA
    ioctl(
        &vcpu,
        KVM_SET_SREGS,
        sregs.as_ptr() as libc::c_ulong,
        "KVM_SET_SREGS",
    )?;
    let mut regs = [0u64; 18];
    regs[6] = 0x7000; // rsp
    regs[16] = CODE; // rip
    regs[17] = 0x2; // rflags: the always-one bit
    ioctl(
        &vcpu,
        KVM_SET_REGS,
        regs.as_ptr() as libc::c_ulong,
        "KVM_SET_REGS",
    )?;

    ioctl(&vcpu, KVM_RUN, 0, "KVM_RUN")?;
    // SAFETY: exit_reason is the u32 at offset 8 of kvm_run.
    let exit_reason = unsafe { *((run as *const u8).add(8) as *const u32) };
    if exit_reason != KVM_EXIT_HLT {
        return Err(format!(
            "guest exited with reason {exit_reason}, expected HLT ({KVM_EXIT_HLT})"
        ));
    }
    Ok(())
}

/// Runs `<exe> probe-kvm --device <dev>` and waits at most `timeout` for it to report
/// that a guest ran. A hung child is killed.
pub fn probe(exe: &Path, dev: &Path, timeout: Duration) -> KvmStatus {
    if !dev.exists() {
        return KvmStatus::Unusable(format!("{} does not exist", dev.display()));
    }
    let started = Instant::now();
    let mut child = match Command::new(exe)
        .arg("probe-kvm")
        .arg("--device")
        .arg(dev)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return KvmStatus::Unusable(format!("cannot run the probe {}: {e}", exe.display()));
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut stderr);
                }
                let elapsed = started.elapsed();
                return if status.success() {
                    tracing::info!(?elapsed, "KVM probe ran a guest");
                    KvmStatus::Usable
                } else {
                    let why = stderr.trim();
                    tracing::warn!(?elapsed, %why, "KVM probe failed");
                    KvmStatus::Unusable(if why.is_empty() {
                        format!("probe exited with {status}")
                    } else {
                        why.to_owned()
                    })
                };
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                // A vCPU stuck in the kernel may take a moment to die; do not wait forever.
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                tracing::warn!(?timeout, "KVM probe did not finish; KVM is not usable");
                return KvmStatus::Unusable(format!(
                    "a KVM guest did not get through a 4M-instruction loop within {timeout:?}: KVM hangs or is far too slow"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return KvmStatus::Unusable(format!("waiting for the probe: {e}")),
        }
    }
}

/// The `probe-kvm` subcommand: exit 0 after the guest's `hlt`, 1 with a message otherwise.
pub fn probe_main(dev: &Path) -> std::process::ExitCode {
    match run_guest(dev) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
