//! Fault-injection seams for tests (feature `failpoints`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static FLUSH_DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Makes every CommitLog flush sleep this long first (0 turns it off). Process-wide.
pub fn set_flush_delay_ms(ms: u64) {
    FLUSH_DELAY_MS.store(ms, Ordering::SeqCst);
}

pub(crate) fn before_flush() {
    let ms = FLUSH_DELAY_MS.load(Ordering::SeqCst);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
