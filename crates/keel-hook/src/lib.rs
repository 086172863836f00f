//! keel at an agent's tool boundary: a coding agent's harness runs `keel hook pre-tool-use` before
//! each tool call, and keel allows the edit (taking a lease on a free file for the agent first) or
//! denies it, with a reason written for the agent to act on.
//!
//! It never asks the agent to call keel: the harness does, and the agent is identified without
//! passing anything. It never approves a call the harness would otherwise ask its user about: an
//! allow is silence, and the harness's own rules still apply.
//!
//! # The model
//! - [`event::Event`] is one hook event read from stdin in a harness's dialect ([`Dialect`]): the
//!   tool, the files it would write, the working directory and the session.
//! - [`agent::Agent`] is who the agent is: its harness process, found by walking up from the hook
//!   past shells (`KEEL_OWNER` names it instead). Its leases die with that process.
//! - [`decide::pre_tool_use`] turns an event into a [`decide::Verdict`]; automatic leases are one
//!   exclusive lease per file, on lane `edit:<path>`, held until the agent's session ends
//!   ([`decide::session_end`]) or its process is gone past the grace.
//! - [`Dialect::render`] prints the verdict the way the harness reads it.
//!
//! - [`shell::footprint`] reads the files a shell command writes from its syntax tree; a command
//!   keel cannot read follows policy `bash` (warn, deny-unknown, allow).
//!
//! # Limitations
//! - Cursor's edit tools are read by the names and `path` member other projects' parsers of its
//!   payloads use; Cursor's docs name only `Write` and `Delete`.

//! # Example
//! ```
//! use keel_hook::{Dialect, Verdict};
//! let event = Dialect::ClaudeCode.parse(br#"{"tool_name": "Edit", "cwd": "/w", "tool_input": {"file_path": "/w/src/a.rs"}}"#)?;
//! assert_eq!(event.paths, [std::path::PathBuf::from("/w/src/a.rs")]);
//! let (answer, code) = Dialect::ClaudeCode.render(&Verdict::Deny { reason: "held by agent-b".into() });
//! assert!(answer.expect("a deny is printed").contains("\"permissionDecision\":\"deny\""));
//! assert_eq!(code, 0);
//! # Ok::<(), keel_hook::EventError>(())
//! ```

#![forbid(unsafe_code)]

pub mod agent;
pub mod decide;
pub mod event;
pub mod install;
pub mod shell;

pub use agent::Agent;
pub use decide::Verdict;
pub use event::{Dialect, Event, EventError};
