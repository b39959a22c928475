//! Wall-clock time in Unix seconds and milliseconds, as JWTs, provider replies and the
//! token store count it. A clock set before 1970 reads 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch to `at`.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds from the Unix epoch to now.
pub fn unix_now() -> u64 {
    unix_seconds(SystemTime::now())
}

/// Milliseconds from the Unix epoch to now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
