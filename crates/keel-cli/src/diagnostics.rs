//! Diagnostics for people debugging keel: `tracing` events, shown on stderr when `KEEL_LOG` holds
//! a filter (`KEEL_LOG=debug`, `KEEL_LOG=keel=debug,keel_etcd=trace`), and nowhere otherwise.
//!
//! They never reach stdout, which is the output scripts, agent harnesses and the MCP client
//! read. Without `KEEL_LOG` no subscriber is installed at all: a keel command is a process of a
//! few milliseconds, and every event is then one relaxed load that finds nobody listening.

use tracing_subscriber::EnvFilter;

/// The environment variable holding the filter.
pub const LOG_VAR: &str = "KEEL_LOG";

/// Installs the stderr subscriber if `KEEL_LOG` is set and not blank. A filter that does not
/// parse is reported on stderr once and logs nothing: diagnostics never stop a command.
pub fn init() {
    let Some(filter) = std::env::var_os(LOG_VAR) else { return };
    let Some(filter) = filter.to_str().map(str::trim).filter(|text| !text.is_empty()) else {
        if filter.to_str().is_none() {
            eprintln!("keel: ${LOG_VAR} is not UTF-8; logging nothing");
        }
        return;
    };
    match EnvFilter::builder().parse(filter) {
        Ok(filter) => {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .finish();
            // Only `main` installs one, once; a second install could only fail harmlessly.
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
        Err(error) => eprintln!("keel: ${LOG_VAR}={filter:?} is not a log filter ({error}); logging nothing"),
    }
}
