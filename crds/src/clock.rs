//! `spec.domain.clock`: the guest's real-time clock and its timers, as KubeVirt maps them
//! to libvirt's `<clock>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The guest's clock: where its real-time clock starts (`utc`, optionally shifted, or a
/// `timezone`) and which timers the guest has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.utc) && has(self.timezone))",
    "message": "set at most one of utc and timezone"
}]))]
pub struct Clock {
    /// The real-time clock runs in UTC, shifted by `offsetSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc: Option<ClockOffsetUtc>,
    /// The real-time clock runs in this time zone (a tz database name such as
    /// `Europe/Berlin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
    )]
    pub timezone: Option<String>,
    /// The guest's timers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timers>,
}

/// A UTC clock, optionally shifted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClockOffsetUtc {
    /// Seconds added to UTC (negative: earlier). Unset: exactly UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_seconds: Option<i32>,
}

/// The guest's timers; a timer left out keeps the hypervisor's default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timers {
    /// The HPET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpet: Option<HpetTimer>,
    /// KVM's paravirtual clock (kvmclock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<PresentTimer>,
    /// The PIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pit: Option<PitTimer>,
    /// The real-time clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc: Option<RtcTimer>,
    /// Hyper-V's reference clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<PresentTimer>,
}

/// A timer that is only there or not.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresentTimer {
    /// Whether the guest has the timer. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// The HPET.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpetTimer {
    /// Whether the guest has the timer. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// What happens to ticks the guest missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_policy: Option<HpetTickPolicy>,
}

/// The PIT.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PitTimer {
    /// Whether the guest has the timer. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// What happens to ticks the guest missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_policy: Option<PitTickPolicy>,
}

/// The real-time clock timer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtcTimer {
    /// Whether the guest has the timer. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// What happens to ticks the guest missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_policy: Option<RtcTickPolicy>,
    /// What the clock follows: the guest's time or the host's (`wall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<RtcTrack>,
}

/// libvirt's tick policies (KubeVirt's values) for each timer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HpetTickPolicy {
    Delay,
    Catchup,
    Merge,
    Discard,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PitTickPolicy {
    Delay,
    Catchup,
    Discard,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RtcTickPolicy {
    Delay,
    Catchup,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RtcTrack {
    Guest,
    Wall,
}
