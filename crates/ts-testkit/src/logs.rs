//! Every log line of a test binary, at every level, captured through the global subscriber:
//! for the tests that scan the services' logs for what must never be there (secrets, an
//! erased person's email). A binary that uses it must not install another subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The captured bytes of every log line so far.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// A copy of everything logged so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Installs (once per binary) a subscriber at `trace` for every target that writes to the
/// returned capture.
pub fn capture_logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .try_init()
            .ok();
        logs
    })
}
