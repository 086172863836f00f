//! `keel policy ...`: the workspace policy every lease obeys, shown or checked.

use std::path::PathBuf;

use clap::Subcommand;
use keel_journal::{Policy, Workspace};
use serde_json::Value;

use crate::{Failure, Status};

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum PolicyCommand {
    /// Print the effective policy (the file's, with every default filled in) as TOML, or JSON.
    Show,
    /// Check a policy file [default: the workspace's]; exit 2 naming the line and key if it is
    /// not one.
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
}

pub fn run(command: &PolicyCommand, workspace: &Workspace, json: bool) -> Result<Status, Failure> {
    let path = Policy::path_in(workspace.root());
    match command {
        PolicyCommand::Show => {
            let policy = Policy::of_workspace(workspace.root()).map_err(crate::failure)?;
            if json {
                let mut object = serde_json::to_value(&policy).expect("a policy serialises");
                object["path"] = Value::from(path.display().to_string());
                object["file_exists"] = Value::from(path.exists());
                outln!("{}", keel_kernel::json::to_line(&object))?;
            } else {
                let from = if path.exists() { "" } else { " (no such file: the defaults)" };
                outln!("# {}{from}\n{}", path.display(), policy.to_toml().trim_end())?;
            }
            Ok(Status::Ok)
        }
        PolicyCommand::Check { file } => {
            let path = file.clone().unwrap_or(path);
            let policy = if file.is_some() { Policy::load(&path) } else { Policy::of_workspace(workspace.root()) };
            policy.map_err(crate::failure)?;
            crate::print(
                json,
                &serde_json::json!({"ok": true, "path": path.display().to_string()}),
                &format!("{}: ok", path.display()),
            )?;
            Ok(Status::Ok)
        }
    }
}
