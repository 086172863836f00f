//! keel-lockfile's integration tests, one binary: the lockfile and the config store in process,
//! under injected faults and power cuts (keel-fs's seam), and across real processes.

mod config;
mod lockfile;
mod processes;
mod seam;
