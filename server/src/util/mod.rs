//! Small helpers several modules share: lowercase hex, RFC 3339 timestamps
//! the background drain loop ([`drain`]) of the prediction log, drift
//! and OTLP threads, and the process's CPU load ([`cpu`]).

pub mod background;
pub mod cpu;
pub mod drain;

pub use background::Background;

use std::time::{SystemTime, UNIX_EPOCH};

/// `bytes` as lowercase hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Exactly `2 * N` lowercase hex digits as `N` bytes; `None` for anything
/// else (uppercase included, as W3C trace context requires).
pub fn hex_to<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Fractional digits of an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Three digits (`.123Z`).
    Millis,
    /// Six digits (`.123456Z`).
    Micros,
}

/// `time` in RFC 3339, UTC, e.g. `2025-01-02T03:04:05.123456Z` with
/// [`Precision::Micros`]. Times before 1970 are clamped to the epoch.
pub fn rfc3339(time: SystemTime, precision: Precision) -> String {
    let time = time.max(UNIX_EPOCH);
    match precision {
        Precision::Millis => humantime::format_rfc3339_millis(time).to_string(),
        Precision::Micros => humantime::format_rfc3339_micros(time).to_string(),
    }
}

/// Lowers the calling thread to the lowest scheduling priority (nice 19):
/// background work (prediction-log sinks, drift analysis, span export) then
/// takes only CPU that inference leaves idle. Best effort: a refusal is logged.
pub fn background_priority(what: &str) {
    if let Err(e) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
        tracing::debug!(thread = what, error = ?e, "cannot lower the thread's priority");
    }
}

/// Puts the calling thread in the idle scheduling class (Linux `SCHED_IDLE`:
/// it runs only when no other thread wants the CPU), or at nice 19 where
/// that is refused. Shadow copies run there. Best effort, like
/// [`background_priority`].
pub fn idle_priority(what: &str) {
    use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let id = thread_priority::unix::thread_native_id();
    if let Err(e) = set_thread_priority_and_policy(id, thread_priority::ThreadPriority::Min, idle) {
        tracing::debug!(thread = what, error = ?e, "no idle scheduling class; nice 19 instead");
        background_priority(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hex_round_trips_and_rejects_uppercase() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex_to::<4>("000fabff"), Some([0x00, 0x0f, 0xab, 0xff]));
        assert_eq!(hex_to::<2>("00FF"), None);
        assert_eq!(hex_to::<2>("00f"), None);
        assert_eq!(hex_to::<1>("+f"), None);
        assert_eq!(hex_to::<1>("é"), None);
    }

    #[test]
    fn rfc3339_in_both_precisions() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_708_800_123_456);
        assert_eq!(rfc3339(t, Precision::Millis), "2026-11-26T16:00:00.123Z");
        assert_eq!(rfc3339(t, Precision::Micros), "2026-11-26T16:00:00.123456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap, Precision::Millis), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1), Precision::Micros),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
