//! What the criterion benches share (a module of each, not a bench of its own).

/// The runtime the benches run their async work on: multi-threaded, with one worker.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}
