//! `release_free_heap` also hands back what the server's allocator
//! (mimalloc) holds freed: a model file's bytes, read to build a session and
//! dropped on a thread that then goes idle, would otherwise stay resident
//! (mimalloc purges freed memory only on a later allocation). Its own
//! process, with mimalloc as the global allocator as in the server binary.

use switchyard::metrics::resident_bytes;
use switchyard::model::onnx::release_free_heap;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FILE: usize = 8 << 20; // a model file's worth

fn resident() -> usize {
    resident_bytes().expect("VmRSS in /proc/self/status") as usize
}

#[test]
#[cfg(target_os = "linux")]
fn freed_model_bytes_leave_the_resident_set() {
    // Read and dropped on one thread (the load's), given back from another (as the deployer does).
    let (before, kept) = std::thread::spawn(|| {
        let bytes = std::hint::black_box(vec![0xa5u8; FILE]);
        let before = resident();
        drop(bytes);
        (before, resident())
    })
    .join()
    .unwrap();
    release_free_heap();
    let after = resident();
    assert!(
        before.saturating_sub(kept) < FILE / 2,
        "dropping alone was expected to keep the pages: {before} -> {kept} bytes resident"
    );
    assert!(
        kept.saturating_sub(after) > FILE / 2,
        "release_free_heap gave back {} of {FILE} freed bytes ({kept} -> {after} resident)",
        kept.saturating_sub(after)
    );
}
