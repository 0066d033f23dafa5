//! Helpers shared by the pipeline's integration tests.

/// Runs `f` on a two-worker runtime whose threads have room for planning the
/// whole rule pack in a debug build (deeper than a test thread's 2 MiB).
pub fn run_with_room<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(32 << 20)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async { tokio::spawn(f).await })
        .expect("the test task")
}
