//! How the receive loop waits after a socket error, so that a persistent one (the socket
//! closed under it, no buffer memory) does not become a loop that burns a core.
//!
//! An ICMP port-unreachable from a gone observer surfaces on Linux as one `ConnectionRefused`
//! (or `ConnectionReset`) from `recv_from`: it concerns one earlier datagram, not the socket,
//! and the next receive is tried at once. Any other error waits, 1 ms after the first and
//! doubling up to 1 s while the errors go on; a datagram received resets the wait.

use std::io::ErrorKind;
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(1);
const MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct RecvBackoff {
    /// Socket errors in a row, other than the per-datagram ones.
    consecutive: u32,
}

impl RecvBackoff {
    /// The wait before the next receive after an error of this kind (`None`: receive at once).
    pub(super) fn after_error(&mut self, kind: ErrorKind) -> Option<Duration> {
        if matches!(
            kind,
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
        ) {
            return None;
        }
        let wait = FIRST
            .saturating_mul(1u32 << self.consecutive.min(10))
            .min(MAX);
        self.consecutive = self.consecutive.saturating_add(1);
        Some(wait)
    }

    pub(super) fn after_datagram(&mut self) {
        self.consecutive = 0;
    }

    /// Whether the current run of errors is worth a warning (its first, then every 64th).
    pub(super) fn should_warn(&self) -> bool {
        self.consecutive == 1 || self.consecutive.is_multiple_of(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persistent_error_waits_longer_and_longer_up_to_a_second() {
        let mut b = RecvBackoff::default();
        let waits: Vec<_> = (0..14)
            .map(|_| b.after_error(ErrorKind::Other).unwrap())
            .collect();
        assert_eq!(waits[0], Duration::from_millis(1));
        assert_eq!(waits[1], Duration::from_millis(2));
        assert_eq!(waits[5], Duration::from_millis(32));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), MAX);
        // A thousand errors in a row take at least ~16 minutes of waiting, not a busy core.
        let total: Duration = (0..1000)
            .filter_map(|_| b.after_error(ErrorKind::Other))
            .sum();
        assert!(total >= Duration::from_secs(900), "{total:?}");
    }

    #[test]
    fn a_datagram_resets_the_wait_and_port_unreachable_never_waits() {
        let mut b = RecvBackoff::default();
        b.after_error(ErrorKind::OutOfMemory);
        b.after_error(ErrorKind::OutOfMemory);
        b.after_datagram();
        assert_eq!(b.after_error(ErrorKind::Other), Some(FIRST));
        assert!(b.should_warn());
        for _ in 0..100 {
            assert_eq!(b.after_error(ErrorKind::ConnectionRefused), None);
            assert_eq!(b.after_error(ErrorKind::ConnectionReset), None);
        }
    }
}
