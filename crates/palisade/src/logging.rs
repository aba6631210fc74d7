//! Logging to stderr through a non-blocking writer: a full pipe (or a
//! reader stuck on one of our own permission events) drops log lines instead
//! of stalling a thread that answers the kernel.
use tracing_subscriber::EnvFilter;

/// Install the subscriber; keep the guard alive for the program's life.
pub(crate) fn init(verbose: u8) -> tracing_appender::non_blocking::WorkerGuard {
    let default = match verbose {
        0 => "info,sqlx=warn,hyper=warn,rustls=warn,reqwest=warn,aya=warn",
        1 => "debug,sqlx=warn,hyper=info,rustls=info,h2=info",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16_384)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .init();
    guard
}
