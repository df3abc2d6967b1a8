//! `release_free_heap` hands the C heap's free pages back to the system:
//! what ONNX Runtime frees after building and warming a session would
//! otherwise stay resident. Its own process, so no other test's allocations
//! move the resident size meanwhile.
// The test allocates with the C library's malloc directly, as ONNX Runtime does.
#![allow(unsafe_code)]

use switchyard::metrics::resident_bytes;
use switchyard::model::onnx::release_free_heap;

const BLOCK: usize = 4096;
const BLOCKS: usize = 16 * 1024; // 64 MiB

fn resident() -> usize {
    resident_bytes().expect("VmRSS in /proc/self/status") as usize
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn freed_c_heap_pages_leave_the_resident_set() {
    // On a thread of its own, so the blocks come from a thread arena, as an executor's do.
    let (before, kept, after) = std::thread::spawn(|| {
        let blocks: Vec<usize> = (0..BLOCKS)
            .map(|_| {
                // SAFETY: a plain allocation, checked, written within its size and freed below.
                let p = unsafe { libc::malloc(BLOCK) } as *mut u8;
                assert!(!p.is_null());
                unsafe { p.write_bytes(0xa5, BLOCK) };
                p as usize
            })
            .collect();
        let before = resident();
        // All but the last: the arena's top stays in use, so free() alone gives nothing back.
        for &p in &blocks[..BLOCKS - 1] {
            // SAFETY: each pointer came from malloc above and is freed once.
            unsafe { libc::free(p as *mut libc::c_void) };
        }
        let kept = resident();
        release_free_heap();
        let after = resident();
        // SAFETY: the last block, from malloc above, freed once.
        unsafe { libc::free(blocks[BLOCKS - 1] as *mut libc::c_void) };
        (before, kept, after)
    })
    .join()
    .unwrap();
    let total = BLOCK * BLOCKS;
    assert!(
        before.saturating_sub(kept) < total / 2,
        "free() alone was expected to keep the pages: {before} -> {kept} bytes resident"
    );
    assert!(
        kept.saturating_sub(after) > total / 2,
        "release_free_heap gave back {} of {total} freed bytes ({kept} -> {after} resident)",
        kept.saturating_sub(after)
    );
}
