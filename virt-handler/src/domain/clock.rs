//! `<clock>`: where the guest's real-time clock starts and which timers it has, as
//! KubeVirt converts `spec.domain.clock`.

use crds::{Clock, wire_name};

use super::xml::Xml;
use crate::config::Virtualization;
use crate::{Error, Result};

pub fn clock(x: &mut Xml, clock: Option<&Clock>, virt: Virtualization) -> Result<()> {
    let Some(c) = clock else {
        x.empty("clock", &[("offset", "utc")]);
        return Ok(());
    };
    let adjustment;
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    match (&c.utc, &c.timezone) {
        (Some(_), Some(_)) => {
            return Err(Error::unsupported(
                "spec.domain.clock",
                "set at most one of utc and timezone",
            ));
        }
        (Some(utc), None) => {
            // KubeVirt's mapping: a shift is libvirt's adjustment; without one the clock
            // is reset to UTC at each start.
            adjustment = utc
                .offset_seconds
                .map_or_else(|| "reset".to_owned(), |s| s.to_string());
            attrs.extend([("offset", "utc"), ("adjustment", adjustment.as_str())]);
        }
        (None, Some(tz)) => attrs.extend([("offset", "timezone"), ("timezone", tz.as_str())]),
        (None, None) => attrs.push(("offset", "utc")),
    }
    let Some(t) = &c.timer else {
        x.empty("clock", &attrs);
        return Ok(());
    };
    let yes_no = |p: Option<bool>| if p.unwrap_or(true) { "yes" } else { "no" };
    x.open("clock", &attrs);
    // KubeVirt's order: rtc, pit, kvmclock, hpet, hypervclock.
    if let Some(rtc) = &t.rtc {
        let (tick, track) = (
            rtc.tick_policy.map(|p| wire_name(&p)),
            rtc.track.map(|p| wire_name(&p)),
        );
        timer(
            x,
            "rtc",
            yes_no(rtc.present),
            tick.as_deref(),
            track.as_deref(),
        );
    }
    if let Some(pit) = &t.pit {
        let tick = pit.tick_policy.map(|p| wire_name(&p));
        timer(x, "pit", yes_no(pit.present), tick.as_deref(), None);
    }
    for (field, name, present) in [
        ("kvm", "kvmclock", t.kvm.as_ref().map(|k| k.present)),
        (
            "hyperv",
            "hypervclock",
            t.hyperv.as_ref().map(|h| h.present),
        ),
    ] {
        let Some(present) = present else { continue };
        if present.unwrap_or(true) && virt == Virtualization::Emulation {
            return Err(Error::unsupported(
                format!("spec.domain.clock.timer.{field}"),
                "this paravirtual clock needs KVM; this guest runs under software emulation",
            ));
        }
        timer(x, name, yes_no(present), None, None);
    }
    if let Some(hpet) = &t.hpet {
        let tick = hpet.tick_policy.map(|p| wire_name(&p));
        timer(x, "hpet", yes_no(hpet.present), tick.as_deref(), None);
    }
    x.close();
    Ok(())
}

fn timer(x: &mut Xml, name: &str, present: &str, tick: Option<&str>, track: Option<&str>) {
    let mut attrs = vec![("name", name), ("present", present)];
    if let Some(t) = tick {
        attrs.push(("tickpolicy", t));
    }
    if let Some(t) = track {
        attrs.push(("track", t));
    }
    x.empty("timer", &attrs);
}
