//! KubeVirt's downward metrics: a few host and VM metrics given to the guest in vhostmd's
//! format, as a `downwardMetrics` volume (a small raw disk rewritten every
//! [`REFRESH_PERIOD`]) and as the `devices.downwardMetrics` virtio-serial channel
//! [`CHANNEL_NAME`], which answers `GET /metrics/XML` followed by a blank line. Both need
//! KubeVirt's `DownwardMetrics` feature gate. virt-handler prepares the disk and the
//! domain, the launcher (beside the domain's libvirt) keeps both fed
//! (README, "Downward metrics").
//!
//! The disk is KubeVirt's (and vhostmd's) layout: 256 KiB; a 16-byte big-endian header
//! (signature `mvbd`, a busy flag, the sum of the body's bytes, the body's length), then
//! the XML body. A writer sets the flag, writes the body, then clears it; a reader retries
//! while the flag is set or the checksum does not match.

use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// KubeVirt's feature gate for both the volume and the device.
pub const FEATURE_GATE: &str = "DownwardMetrics";
/// The virtio-serial port's name (vhostmd's), `/sys/class/virtio-ports/*/name` in the
/// guest.
pub const CHANNEL_NAME: &str = "org.github.vhostmd.1";
/// The channel's socket in the per-VMI directory: QEMU binds it, the launcher connects.
pub const CHANNEL_SOCKET: &str = "downwardmetrics.sock";
/// How often the disk is rewritten (KubeVirt's virt-handler: every 5 s).
pub const REFRESH_PERIOD: Duration = Duration::from_secs(5);
/// The disk's size.
pub const DISK_SIZE: u64 = 262_144;
/// The request a guest sends on the channel (then a blank line).
pub const REQUEST: &str = "GET /metrics/XML";
/// The channel's answer to anything else.
pub const INVALID_REQUEST: &str = "INVALID REQUEST\n\n";

const SIGNATURE: &[u8; 4] = b"mvbd";
const HEADER_LEN: usize = 16;
/// The most body the disk holds (KubeVirt's bound).
const MAX_BODY: usize = DISK_SIZE as usize - 24;

/// Whose metric it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Host,
    Vm,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Host => "host",
            Context::Vm => "vm",
        }
    }
}

/// One metric, typed as KubeVirt types it (its value's Go type decides).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub context: Context,
    /// vhostmd's type: `real64`, `int64`, `uint64`, `string`, ...
    pub kind: &'static str,
    pub value: String,
    pub unit: Option<&'static str>,
}

impl Metric {
    /// A string (unitless, as all of KubeVirt's).
    pub fn string(context: Context, name: &'static str, value: &str) -> Metric {
        Metric::new(context, name, "string", value.to_owned(), None)
    }

    /// A real64, with six decimals as KubeVirt prints it.
    pub fn real64(context: Context, name: &'static str, value: f64, unit: &'static str) -> Metric {
        Metric::new(context, name, "real64", format!("{value:.6}"), Some(unit))
    }

    pub fn int64(
        context: Context,
        name: &'static str,
        value: i64,
        unit: Option<&'static str>,
    ) -> Metric {
        Metric::new(context, name, "int64", value.to_string(), unit)
    }

    pub fn uint64(context: Context, name: &'static str, value: u64, unit: &'static str) -> Metric {
        Metric::new(context, name, "uint64", value.to_string(), Some(unit))
    }

    fn new(
        context: Context,
        name: &'static str,
        kind: &'static str,
        value: String,
        unit: Option<&'static str>,
    ) -> Metric {
        Metric {
            name,
            context,
            kind,
            value,
            unit,
        }
    }
}

/// The metrics as vhostmd's XML, indented as KubeVirt writes it.
pub fn to_xml(metrics: &[Metric]) -> String {
    let mut out = String::from("<metrics>");
    for m in metrics {
        let _ = write!(
            out,
            "\n  <metric type=\"{}\" context=\"{}\"",
            m.kind,
            m.context.as_str()
        );
        if let Some(unit) = m.unit {
            let _ = write!(out, " unit=\"{}\"", escape(unit));
        }
        let _ = write!(
            out,
            ">\n    <name>{}</name>\n    <value>{}</value>\n  </metric>",
            escape(m.name),
            escape(&m.value)
        );
    }
    out.push_str("\n</metrics>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Creates the disk at `path` (its full size, sparse) holding no metrics yet, so a guest
/// that reads it before the first refresh finds a valid, empty `<metrics>`.
pub fn create_disk(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    f.set_len(DISK_SIZE)?;
    write_disk(&mut f, &to_xml(&[]))
}

/// Writes `xml` as the disk's body: busy header, body, then the header cleared.
pub fn write_disk<F: Write + Seek>(f: &mut F, xml: &str) -> std::io::Result<()> {
    let mut body = xml.as_bytes().to_vec();
    // As KubeVirt: vhostmd's vm-dump-metrics prints the body without a newline of its own.
    body.push(b'\n');
    if body.len() > MAX_BODY {
        return Err(std::io::Error::other(format!(
            "metrics body of {} bytes, the disk holds {MAX_BODY}",
            body.len()
        )));
    }
    let checksum = body.iter().fold(0i32, |s, b| s.wrapping_add(i32::from(*b)));
    let length = body.len() as i32;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&header(1, checksum, length))?;
    f.flush()?;
    f.write_all(&body)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&header(0, checksum, length))?;
    f.flush()
}

fn header(flag: i32, checksum: i32, length: i32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(SIGNATURE);
    h[4..8].copy_from_slice(&flag.to_be_bytes());
    h[8..12].copy_from_slice(&checksum.to_be_bytes());
    h[12..16].copy_from_slice(&length.to_be_bytes());
    h
}

/// Why a disk's content is not a set of metrics (yet).
#[derive(Debug, PartialEq, Eq)]
pub enum DiskError {
    NoSignature,
    /// A writer is half way: read again.
    Busy,
    BadLength(i32),
    BadChecksum,
}

/// The XML body of a disk's bytes, verified as vhostmd's readers verify it.
pub fn read_disk(bytes: &[u8]) -> Result<String, DiskError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != SIGNATURE {
        return Err(DiskError::NoSignature);
    }
    let word = |i: usize| i32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    if word(4) != 0 {
        return Err(DiskError::Busy);
    }
    let length = word(12);
    let body = usize::try_from(length)
        .ok()
        .filter(|l| *l <= MAX_BODY && HEADER_LEN + l <= bytes.len())
        .map(|l| &bytes[HEADER_LEN..HEADER_LEN + l])
        .ok_or(DiskError::BadLength(length))?;
    let sum = body.iter().fold(0i32, |s, b| s.wrapping_add(i32::from(*b)));
    if sum != word(8) {
        return Err(DiskError::BadChecksum);
    }
    Ok(String::from_utf8_lossy(body).into_owned())
}

/// [`read_disk`] of the file at `path`.
pub fn read_disk_file(path: &Path) -> std::io::Result<Result<String, DiskError>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(DISK_SIZE)
        .read_to_end(&mut bytes)?;
    Ok(read_disk(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_has_kubevirts_shape() {
        let xml = to_xml(&[
            Metric::string(Context::Host, "HostName", "node-a&b"),
            Metric::real64(Context::Vm, "TotalCPUTime", 1.5, "s"),
            Metric::int64(Context::Vm, "ResourceProcessorLimit", 2, None),
            Metric::uint64(Context::Host, "FreePhysicalMemory", 1024, "KiB"),
        ]);
        assert_eq!(
            xml,
            "<metrics>\n  <metric type=\"string\" context=\"host\">\n    <name>HostName</name>\n    <value>node-a&amp;b</value>\n  </metric>\
             \n  <metric type=\"real64\" context=\"vm\" unit=\"s\">\n    <name>TotalCPUTime</name>\n    <value>1.500000</value>\n  </metric>\
             \n  <metric type=\"int64\" context=\"vm\">\n    <name>ResourceProcessorLimit</name>\n    <value>2</value>\n  </metric>\
             \n  <metric type=\"uint64\" context=\"host\" unit=\"KiB\">\n    <name>FreePhysicalMemory</name>\n    <value>1024</value>\n  </metric>\n</metrics>"
        );
        assert_eq!(to_xml(&[]), "<metrics>\n</metrics>");
    }

    #[test]
    fn disk_round_trips_and_a_busy_or_torn_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vhostmd0");
        create_disk(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), DISK_SIZE);
        assert_eq!(
            read_disk_file(&path).unwrap().unwrap(),
            "<metrics>\n</metrics>\n"
        );
        let xml = to_xml(&[Metric::int64(
            Context::Host,
            "Time",
            1_700_000_000,
            Some("s"),
        )]);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        write_disk(&mut f, &xml).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"mvbd");
        assert_eq!(read_disk(&bytes).unwrap(), format!("{xml}\n"));
        bytes[20] ^= 1;
        assert_eq!(read_disk(&bytes), Err(DiskError::BadChecksum));
        bytes[7] = 1;
        assert_eq!(read_disk(&bytes), Err(DiskError::Busy));
        assert_eq!(read_disk(&[0; 64]), Err(DiskError::NoSignature));
    }
}
