//! The runtime's clock: TSC-based where the CPU has a stable one (through `quanta`),
//! cheap enough to read several times per message.
//!
//! Times are [`Nanos`](crate::Nanos) since the first use of the clock in this process.

use std::sync::OnceLock;

struct Epoch {
    clock: quanta::Clock,
    start: u64,
}

fn epoch() -> &'static Epoch {
    static EPOCH: OnceLock<Epoch> = OnceLock::new();
    EPOCH.get_or_init(|| {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        Epoch { clock, start }
    })
}

/// Nanoseconds since the clock's epoch.
///
/// ```
/// let before = dirigo_runtime::clock::now();
/// std::thread::sleep(std::time::Duration::from_millis(1));
/// assert!(dirigo_runtime::clock::now() - before >= 900_000);
/// ```
#[inline]
pub fn now() -> u64 {
    let epoch = epoch();
    epoch.clock.delta_as_nanos(epoch.start, epoch.clock.raw())
}

/// A raw clock reading (ticks), for measuring intervals cheaply on the hot path.
#[inline]
pub fn raw() -> u64 {
    epoch().clock.raw()
}

/// Nanoseconds between two raw readings.
#[inline]
pub fn raw_delta_ns(start: u64, end: u64) -> u64 {
    if end <= start {
        return 0;
    }
    epoch().clock.delta_as_nanos(start, end)
}

#[cfg(test)]
mod tests {
    #[test]
    fn moves_forward_at_wall_speed() {
        let (a, raw_a) = (super::now(), super::raw());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (b, raw_b) = (super::now(), super::raw());
        let elapsed = b - a;
        assert!((15_000_000..200_000_000).contains(&elapsed), "{elapsed}");
        let raw_elapsed = super::raw_delta_ns(raw_a, raw_b);
        assert!((15_000_000..200_000_000).contains(&raw_elapsed));
    }
}
