//! Process allocator: mimalloc, configured to keep freed memory mapped. The encoders
//! allocate and free tens of MB per layer; returning those pages to the OS and faulting
//! them back in (zeroed) cost ~15% of the encoder's time with the default settings.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (index 15 in v2 and v3; checked in
/// the test below against its documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never purge freed pages back to the OS (peak RSS is unchanged; steady-state RSS stays at
/// the peak instead of shrinking between images).
pub fn configure() {
    // SAFETY: plain option setter of the linked mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_option_index() {
        // purge_delay defaults to 1000 ms in mimalloc v3 (10 ms in v2); the options around
        // index 15 (numa nodes, os_tag, eager commit delay) have other defaults.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(
            v == 1000 || v == 10 || v == -1,
            "option 15 is not purge_delay (value {v})"
        );
    }
}
