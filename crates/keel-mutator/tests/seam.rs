//! The write gate under injected storage faults (keel-fs's seam, redb style): the power cut
//! before every file operation of a script of writes, a rename and a delete, with every crash
//! image; and an I/O error at every operation. After recovery each path holds its old or its new
//! content, never a mix; every acknowledged operation holds; no scratch file is left; and the
//! fleet goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_fs::seam::Survives;
use keel_fs::{CrashSim, FailAfter, Storage};
use keel_journal::Grant;
use keel_mutator::{Expect, IntentId, Mutator, MutatorOptions, Outcome, Request, content_hash};

use crate::support::Workspace;

/// One step of the script, applied to the model as it is applied to the disk.
#[derive(Debug, Clone, Copy)]
enum Act {
    Write(&'static str, &'static str),
    Rename(&'static str, &'static str),
    Delete(&'static str),
}

const SCRIPT: [Act; 6] = [
    Act::Write("src/a.txt", "one"),
    Act::Write("src/a.txt", "two"),
    Act::Rename("src/a.txt", "src/b.txt"),
    Act::Write("src/c.txt", "three"),
    Act::Delete("src/c.txt"),
    Act::Write("src/seed.txt", "new seed"),
];

const SEED: &str = "old seed";

type Model = BTreeMap<String, String>;

fn seeded_model() -> Model {
    Model::from([("src/seed.txt".to_owned(), SEED.to_owned())])
}

fn apply(model: &mut Model, act: Act) {
    match act {
        Act::Write(path, content) => {
            model.insert(path.to_owned(), content.to_owned());
        }
        Act::Rename(from, to) => {
            if let Some(content) = model.remove(from) {
                model.insert(to.to_owned(), content);
            }
        }
        Act::Delete(path) => {
            model.remove(path);
        }
    }
}

fn expect_for(model: &Model, path: &str) -> Expect {
    match model.get(path) {
        Some(content) => Expect::Hash(content_hash(content.as_bytes())),
        None => Expect::Absent,
    }
}

/// Submits step `n` of the script as it is first made (its expectation is the model's state
/// after the steps before it), with its own intent id.
fn submit<S: Storage + Clone>(
    mutator: &Mutator<keel_journal::Journal, S>,
    grant: &Grant,
    n: usize,
) -> Result<Outcome, keel_mutator::MutateError> {
    let mut model = seeded_model();
    for act in &SCRIPT[..n] {
        apply(&mut model, *act);
    }
    let intent = IntentId::new(&format!("step-{n}")).expect("intent id");
    let request = |path| Request::for_grant(grant, "agent-a", expect_for(&model, path), intent.clone());
    match SCRIPT[n] {
        Act::Write(path, content) => mutator.write(path, content.as_bytes(), &request(path)),
        Act::Rename(from, to) => mutator.rename(from, to, &request(from)),
        Act::Delete(path) => mutator.delete(path, &request(path)),
    }
}

/// Runs the script until the first error; returns how many steps were acknowledged.
fn run<S: Storage + Clone>(mutator: &Mutator<keel_journal::Journal, S>, grant: &Grant) -> usize {
    for (n, act) in SCRIPT.iter().enumerate() {
        match submit(mutator, grant, n) {
            Ok(Outcome::Written { .. } | Outcome::Renamed { .. } | Outcome::Deleted { .. }) => {}
            Ok(other) => panic!("step {n} {act:?}: a fault-free answer must be a success, got {other:?}"),
            Err(error) => {
                assert!(!error.to_string().is_empty(), "the error says something");
                return n;
            }
        }
    }
    SCRIPT.len()
}

/// The write made after a transient error, outside the script's model.
const OTHER: &str = "src/other.txt";

/// The files beneath `root/src` on `sim` (but [`OTHER`]), by workspace-relative path.
fn files(sim: &CrashSim, root: &Path) -> Model {
    let mut found = Model::new();
    for path in sim.paths() {
        if let Ok(relative) = path.strip_prefix(root)
            && relative.starts_with("src")
            && relative != Path::new(OTHER)
        {
            let content = sim.read(&path).expect("listed file reads");
            found.insert(relative.to_string_lossy().into_owned(), String::from_utf8_lossy(&content).into_owned());
        }
    }
    found
}

/// What may be on disk once `acked` steps were acknowledged and the next one was in flight.
fn allowed(acked: usize) -> Vec<Model> {
    let mut model = seeded_model();
    for act in &SCRIPT[..acked] {
        apply(&mut model, *act);
    }
    let mut allowed = vec![model.clone()];
    if let Some(in_flight) = SCRIPT.get(acked) {
        apply(&mut model, *in_flight);
        allowed.push(model);
    }
    allowed
}

struct Bench {
    ws: Workspace,
    grant: Grant,
}

impl Bench {
    fn new() -> Self {
        let ws = Workspace::new();
        // The mutator lock is a real `flock` beside the simulated files.
        std::fs::create_dir_all(ws.root.join(".keel")).expect("mkdir .keel");
        let grant = ws.acquire("src", &["src/"], "agent-a");
        Self { ws, grant }
    }

    fn seeded(&self) -> CrashSim {
        let sim = CrashSim::new();
        sim.put_durable(&self.ws.root.join("src/seed.txt"), SEED.as_bytes(), 0o644);
        sim
    }

    fn open<S: Storage + Clone>(
        &self,
        storage: S,
    ) -> Result<Mutator<keel_journal::Journal, S>, keel_mutator::MutateError> {
        Mutator::open_with(storage, &self.ws.root, self.ws.journal(), MutatorOptions::default())
    }

    /// Recovers on `image` and checks it against `acked`; then a new write goes through.
    fn check_recovered(&self, image: &CrashSim, acked: usize, context: &str) {
        let mutator = self.open(image).unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"));
        let found = files(image, &self.ws.root);
        let allowed = allowed(acked);
        assert!(allowed.contains(&found), "{context}: after recovery the files are {found:?}, not one of {allowed:?}");
        if let Some(last) = acked.checked_sub(1) {
            // Exactly once: a retry of an acknowledged step is a duplicate, never a second effect.
            let retried = submit(&mutator, &self.grant, last).unwrap_or_else(|e| panic!("{context}: retry: {e}"));
            assert!(matches!(retried, Outcome::Duplicate { .. }), "{context}: retry of step {last}: {retried:?}");
        }
        let intent = IntentId::new("after-recovery").expect("intent id");
        let request = Request::for_grant(&self.grant, "agent-a", Expect::Absent, intent);
        let outcome = mutator.write("src/fresh.txt", b"fresh", &request).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert!(matches!(outcome, Outcome::Written { .. }), "{context}: {outcome:?}");
    }
}

fn root_files(sim: &CrashSim, root: &Path) -> Vec<PathBuf> {
    sim.paths().into_iter().filter(|p| p.starts_with(root)).collect()
}

#[test]
fn power_cut_before_every_operation_leaves_old_or_new_and_every_acknowledged_step() {
    let bench = Bench::new();
    let dry = bench.seeded();
    let before = dry.ops();
    let acked = run(&bench.open(&dry).expect("open"), &bench.grant);
    assert_eq!(acked, SCRIPT.len(), "the script runs whole without faults");
    let total = dry.ops() - before;
    assert!(total > 60, "the script does real I/O ({total} operations)");
    assert_eq!(files(&dry, &bench.ws.root), allowed(SCRIPT.len())[0]);
    for cut in 0..total {
        let sim = bench.seeded();
        sim.cut_power_at(sim.ops() + cut);
        let acked = match bench.open(&sim) {
            Ok(mutator) => run(&mutator, &bench.grant),
            Err(_) => 0,
        };
        assert!(sim.powered_off(), "cut at {cut}/{total}: the power was cut");
        for names in Survives::ALL {
            for data in Survives::ALL {
                let image = sim.crash(names, data);
                let context = format!("cut at {cut}/{total} after {acked} steps, names {names:?}, data {data:?}");
                bench.check_recovered(&image, acked, &context);
                let scratch: Vec<_> = root_files(&image, &bench.ws.root)
                    .into_iter()
                    .filter(|p| {
                        p.to_string_lossy().contains(".keel-tmp.") || p.to_string_lossy().contains(".keel-trash.")
                    })
                    .collect();
                assert!(scratch.is_empty(), "{context}: scratch files left after recovery: {scratch:?}");
            }
        }
    }
}

#[test]
fn an_io_error_at_every_operation_is_a_typed_error_and_recovery_keeps_old_or_new() {
    let bench = Bench::new();
    let dry = bench.seeded();
    let before = dry.ops();
    run(&bench.open(&dry).expect("open"), &bench.grant);
    let total = dry.ops() - before;
    for fail_at in 0..total {
        for sticky in [false, true] {
            let sim = bench.seeded();
            let failing = if sticky { FailAfter::sticky(&sim, fail_at) } else { FailAfter::once(&sim, fail_at) };
            let acked = match bench.open(&failing) {
                Ok(mutator) => {
                    let acked = run(&mutator, &bench.grant);
                    if !sticky && acked < SCRIPT.len() {
                        // A transient error: the same mutator goes on (its next session recovers
                        // the failed intent first).
                        let intent = IntentId::new("after-error").expect("intent id");
                        let request = Request::for_grant(&bench.grant, "agent-a", Expect::Absent, intent);
                        let outcome = mutator
                            .write(OTHER, b"other", &request)
                            .unwrap_or_else(|e| panic!("once at {fail_at}: the mutator is stuck: {e}"));
                        assert!(matches!(outcome, Outcome::Written { .. }), "once at {fail_at}: {outcome:?}");
                    }
                    acked
                }
                Err(_) => 0,
            };
            assert!(failing.tripped(), "fail at {fail_at}: the fault was injected");
            let context =
                format!("{} at {fail_at}/{total} after {acked} steps", if sticky { "sticky" } else { "once" });
            bench.check_recovered(&sim, acked, &context);
        }
    }
}
