//! `--log-format plain|json` and the global tracing subscriber, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// How a binary writes its logs (stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line, fields flattened, with the current span.
    Json,
}

/// Installs the global subscriber (stderr, `RUST_LOG` or `default_filter`). A second call
/// does nothing, so tests may call it freely.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
