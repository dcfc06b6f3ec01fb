//! A base pointer shared by parallel tasks that each write their own part of one output buffer
//! (the blocks of the attention kernel, the output columns of the int8 kernel).

/// The output buffer's base. Whoever writes through it must keep the tasks' parts disjoint.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);

// SAFETY: tasks write disjoint parts only (each user's own invariant), so sharing the base
// between threads races on nothing.
unsafe impl Send for OutPtr {}
// SAFETY: as for `Send`: a shared base pointer is only ever written through at disjoint parts.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// Through a method, so closures capture the wrapper and not the bare pointer.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
