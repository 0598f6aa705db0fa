//! libvirt domain lifecycle callbacks turned into [`protocol::Event`]s on a channel.

use std::os::raw::{c_int, c_void};

use tokio::sync::mpsc::UnboundedSender;
use virt::connect::Connect;
use virt::sys;

use crate::protocol::{Event, StopReason};
use crate::{Error, Result};

/// Subscribes to lifecycle and reboot events of every domain of `conn` (it has one) for
/// the connection's lifetime. Reboots are sent as `Rebooted { count: 0 }`; the
/// supervisor counts them.
pub fn register(conn: &Connect, tx: UnboundedSender<Event>) -> Result<()> {
    let cb: sys::virConnectDomainEventCallback = Some(on_lifecycle);
    // SAFETY: libvirt calls a lifecycle callback with the signature of
    // virConnectDomainEventCallback although the register function takes the generic
    // type (VIR_DOMAIN_EVENT_CALLBACK in libvirt's headers does the same cast).
    let generic: sys::virConnectDomainEventGenericCallback = unsafe { std::mem::transmute(cb) };
    register_one(
        conn,
        sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        generic,
        tx.clone(),
    )?;
    // The reboot event's callback has the generic signature itself.
    register_one(conn, sys::VIR_DOMAIN_EVENT_ID_REBOOT, Some(on_reboot), tx)
}

/// Registers `cb` for event `id` of every domain, with `tx` as its opaque data (freed by
/// libvirt when the connection closes).
pub(crate) fn register_one<T: Send + 'static>(
    conn: &Connect,
    id: sys::virDomainEventID,
    cb: sys::virConnectDomainEventGenericCallback,
    tx: UnboundedSender<T>,
) -> Result<()> {
    let opaque = Box::into_raw(Box::new(tx)) as *mut c_void;
    // SAFETY: conn is open; opaque is a leaked Box that free_sender reclaims.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            id as c_int,
            cb,
            opaque,
            Some(free_sender::<T>),
        )
    };
    if id < 0 {
        // SAFETY: libvirt did not take ownership on failure.
        unsafe { free_sender::<T>(opaque) };
        return Err(Error::Libvirt(virt::error::Error::last_error()));
    }
    Ok(())
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: opaque is the sender registered above, alive until free_sender.
    let tx = unsafe { &*(opaque as *const UnboundedSender<Event>) };
    tracing::debug!(event, detail, "libvirt lifecycle event");
    if let Some(ev) = to_event(event as u32, detail as u32) {
        let _ = tx.send(ev);
    }
    0
}

unsafe extern "C" fn on_reboot(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    opaque: *mut c_void,
) {
    // SAFETY: opaque is the sender registered above, alive until free_sender.
    let tx = unsafe { &*(opaque as *const UnboundedSender<Event>) };
    tracing::debug!("libvirt reboot event");
    let _ = tx.send(Event::Rebooted { count: 0 });
}

unsafe extern "C" fn free_sender<T>(opaque: *mut c_void) {
    // SAFETY: opaque came from Box::into_raw in register_one, with the same T.
    drop(unsafe { Box::from_raw(opaque as *mut UnboundedSender<T>) });
}

/// The events virt-handler cares about; defined/undefined, PM suspend and the guest's
/// "shutting down" notice are left out.
pub fn to_event(event: u32, detail: u32) -> Option<Event> {
    match event {
        sys::VIR_DOMAIN_EVENT_STARTED => Some(Event::Started),
        sys::VIR_DOMAIN_EVENT_SUSPENDED => Some(Event::Paused),
        sys::VIR_DOMAIN_EVENT_RESUMED => Some(Event::Resumed),
        sys::VIR_DOMAIN_EVENT_STOPPED => Some(Event::Stopped {
            reason: match detail {
                sys::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN => StopReason::Shutdown,
                sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED => StopReason::Destroyed,
                sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED => StopReason::Crashed,
                sys::VIR_DOMAIN_EVENT_STOPPED_FAILED => StopReason::Failed,
                _ => StopReason::Other,
            },
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_details_map_to_reasons() {
        assert_eq!(
            to_event(
                sys::VIR_DOMAIN_EVENT_STOPPED,
                sys::VIR_DOMAIN_EVENT_STOPPED_FAILED
            ),
            Some(Event::Stopped {
                reason: StopReason::Failed
            })
        );
        assert_eq!(to_event(sys::VIR_DOMAIN_EVENT_DEFINED, 0), None);
        assert_eq!(
            to_event(sys::VIR_DOMAIN_EVENT_STARTED, 0),
            Some(Event::Started)
        );
    }
}
