//! The synchronization primitives the mesh is written against.
//!
//! The ring and the doorbell name their atomics, cells, barriers and thread handles
//! through `crate::sync`, so the loom model tests can compile the very same source files
//! against loom's types (see `runtime/tests/loom_mesh.rs`, which provides its own `sync`
//! module with the same names).

pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub(crate) use std::sync::Arc;
pub(crate) use std::thread::Thread;

/// An `UnsafeCell` with loom's access API (`with` / `with_mut`), free in normal builds.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// The sender's half of the asymmetric barrier pair; see [`crate::fence`].
#[inline(always)]
pub(crate) fn light_barrier() {
    crate::fence::light_barrier();
}

/// The sleeper's half of the asymmetric barrier pair; see [`crate::fence`].
#[inline]
pub(crate) fn heavy_barrier() {
    crate::fence::heavy_barrier();
}

/// Parks the current thread for at most `timeout`.
#[inline]
pub(crate) fn park_timeout(timeout: std::time::Duration) {
    std::thread::park_timeout(timeout);
}
