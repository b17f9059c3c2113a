//! One poison policy for every std lock on the server.
//!
//! A panic while a lock is held is a bug, and the panic hook has already logged it. The
//! state behind the server's locks is plain maps and counters that stay usable (at worst
//! one operation's change is half made, which the timers and the next operation on the
//! same session repair), while refusing every later operation would take the whole
//! server off the air for every team on it. So: take the data, clear the poison, count it
//! (`roger_lock_poisoned_total`) and go on. Every `Mutex` on the server is locked through
//! [`lock`].

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering it if a panic poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| {
        metrics::counter!("roger_lock_poisoned_total").increment(1);
        tracing::error!("a lock was poisoned by a panic: recovering its data");
        m.clear_poison();
        poisoned.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            *g = 2;
            panic!("boom");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 2);
        assert!(!m.is_poisoned());
    }
}
