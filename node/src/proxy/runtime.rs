//! The data plane's own thread: a single-threaded tokio runtime that drives the QUIC
//! endpoint (its UDP socket is registered here), the app listeners, the inbound server,
//! the pooled streams and every request task, so a request crosses no thread on its way
//! through the agent. Gossip, the API, the store, the CA and the log writers stay on the
//! agent's main runtime, where a slow disk or a signature cannot stall a request.
//!
//! Measured (BENCHMARKS.md): on the 2-core bench machine the agent on one thread carried
//! more requests per second for less CPU than on tokio's two work-stealing workers,
//! whose cross-thread wake-ups were the largest item of the profile. One thread is what
//! a small host wants; a runtime per core (listeners sharded with SO_REUSEPORT) is the
//! step after, for hosts where one core is not enough.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The data-plane thread and its runtime.
#[derive(Debug)]
pub struct DataRuntime {
    handle: Handle,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl DataRuntime {
    /// Starts the thread (named `weft-data`).
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("weft-data")
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weft-data".into())
            .spawn(move || {
                runtime.block_on(until.cancelled());
                // Tasks still running (connections being drained) get a moment, then go.
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        Ok(Self {
            handle,
            stop,
            thread: Some(thread),
        })
    }

    /// The runtime's handle: `enter()` it to create what must live there (the QUIC
    /// endpoint), `spawn` on it what serves traffic.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `f` on the data thread and waits for it from any runtime.
    pub async fn run<F>(handle: &Handle, f: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        handle.spawn(f).await.ok()
    }

    /// Stops the runtime after its tasks were drained, and waits for the thread.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for DataRuntime {
    fn drop(&mut self) {
        // An agent that failed to start: the thread ends by itself.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_data_thread_and_stop_with_it() {
        let rt = DataRuntime::start().expect("a runtime");
        let name = DataRuntime::run(rt.handle(), async {
            std::thread::current().name().map(str::to_owned)
        })
        .await
        .flatten();
        assert_eq!(name.as_deref(), Some("weft-data"));
        let handle = rt.handle().clone();
        rt.stop().await;
        assert!(
            DataRuntime::run(&handle, async {}).await.is_none(),
            "nothing runs after stop"
        );
    }
}
