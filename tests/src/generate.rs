//! A deterministic generator of lane journals in `dos-kernel`'s record style.
//!
//! Records look like the ones in the `dos-journal-v1` fixtures: keys sorted, `", "` and `": "`
//! separators, non-ASCII kept as UTF-8, `seq` rising by one, `ts` a UTC second. The generator keeps
//! its own model of the live set so that `RELEASE`, `HEARTBEAT` and `ADOPT` name leases that are
//! live (mostly) and `CHECKPOINT` carries them; the model is a guide, not an oracle: odd payloads can
//! make the real fold differ from it, which is the point.
//!
//! Output depends only on the seed, the record count and the options (a splitmix64 stream, no
//! floats, no hashing of pointers), so it is identical on every platform.

use std::fmt::Write as _;
use std::io::{self, Write};

/// A small, fast, portable pseudo-random stream (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream from a seed; every seed (0 included) gives a good stream.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A number in `0..bound` (0 when `bound` is 0). The modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next_u64() % bound }
    }

    /// An index into a slice of `len` items (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// One item of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// The splitmix64 finaliser: a bijective scramble of 64 bits. Also how case seeds are derived.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Relative weights of the record kinds. `acquire + reconcile` against `release + scavenge` sets
/// how often the live set churns; which of the two sides a churn record takes is steered so the
/// live set hovers around [`GenOptions::live_target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// `ACQUIRE` with a `lease` body.
    pub acquire: u32,
    /// `RELEASE`.
    pub release: u32,
    /// `HEARTBEAT`.
    pub heartbeat: u32,
    /// `ADOPT`.
    pub adopt: u32,
    /// `RECONCILE` (body built from the record's members).
    pub reconcile: u32,
    /// `SCAVENGE`.
    pub scavenge: u32,
    /// `REFUSE` (long prose reasons).
    pub refuse: u32,
    /// `HALT`.
    pub halt: u32,
    /// `SPAWN`.
    pub spawn: u32,
    /// `CHECKPOINT` of the generator's live set (a compaction's output, mid-file).
    pub checkpoint: u32,
    /// History with no effect: `ATTEMPT`, `ENFORCE`, an unknown future op.
    pub other: u32,
}

impl Mix {
    /// What a busy workspace writes: mostly `ACQUIRE`/`RELEASE`/`HEARTBEAT`, ~240 bytes a record.
    pub fn benchmark() -> Self {
        Self {
            acquire: 21,
            release: 19,
            heartbeat: 53,
            adopt: 1,
            reconcile: 1,
            scavenge: 2,
            refuse: 1,
            halt: 1,
            spawn: 1,
            checkpoint: 0,
            other: 1,
        }
    }

    /// Every kind often, checkpoints included: for differential tests.
    pub fn everything() -> Self {
        Self {
            acquire: 20,
            release: 14,
            heartbeat: 12,
            adopt: 8,
            reconcile: 6,
            scavenge: 5,
            refuse: 5,
            halt: 3,
            spawn: 3,
            checkpoint: 2,
            other: 3,
        }
    }

    fn total(&self) -> u64 {
        [
            self.acquire,
            self.release,
            self.heartbeat,
            self.adopt,
            self.reconcile,
            self.scavenge,
            self.refuse,
            self.halt,
            self.spawn,
            self.checkpoint,
            self.other,
        ]
        .iter()
        .map(|w| u64::from(*w))
        .sum()
    }
}

impl Default for Mix {
    fn default() -> Self {
        Self::benchmark()
    }
}

/// Which faults to inject, and how often. Each kind is a switch so a test can leave out a kind that
/// triggers a known kernel bug without losing the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one switch per fault kind is the point
pub struct Faults {
    /// Per-mille chance, for each record, of a stray line before it and, separately, of an odd
    /// payload in it. 0 turns every fault off.
    pub per_mille: u32,
    /// Unparseable lines mid-file (repaired torn writes, prose).
    pub corrupt_lines: bool,
    /// JSON lines that are not objects (`[1, 2, 3]`, `"str"`, `42`, `null`) and `{}`.
    pub non_object_lines: bool,
    /// Blank and white-space-only lines, and records wrapped in white space (`\r`, U+3000, U+001C).
    pub blank_lines: bool,
    /// An unparseable last line, with or without its `\n` (one journal in three).
    pub torn_tail: bool,
    /// `loop_ts` as a number, bool or null; `lease` not an object; escaped strings; U+2028 and
    /// friends; invalid UTF-8; duplicate keys; `seq` as a float, string or negative number; odd
    /// heartbeats; empty identities; non-string ops; malformed checkpoint rows; `_CORRUPT` records
    /// carried over from an earlier compaction.
    pub odd_payloads: bool,
    /// `ACQUIRE`s whose `lease` body names another `(loop_ts, lane)` than the record (as in
    /// fixtures case0003, case0008, case0016, case0031).
    pub mis_keyed_leases: bool,
    /// Numbers that Python finds equal but JSON spells differently (`"pid": 7.0` against a
    /// lease's `7`), where `ADOPT` compares pids.
    pub python_equal_numbers: bool,
}

impl Faults {
    /// No faults: a clean journal.
    pub fn none() -> Self {
        Self {
            per_mille: 0,
            corrupt_lines: false,
            non_object_lines: false,
            blank_lines: false,
            torn_tail: false,
            odd_payloads: false,
            mis_keyed_leases: false,
            python_equal_numbers: false,
        }
    }

    /// Every kind of fault, at `per_mille`.
    pub fn all(per_mille: u32) -> Self {
        Self {
            per_mille,
            corrupt_lines: true,
            non_object_lines: true,
            blank_lines: true,
            torn_tail: true,
            odd_payloads: true,
            mis_keyed_leases: true,
            python_equal_numbers: true,
        }
    }

    fn stray_kinds(&self) -> Vec<Stray> {
        let mut kinds = Vec::new();
        if self.corrupt_lines {
            kinds.push(Stray::Corrupt);
        }
        if self.non_object_lines {
            kinds.push(Stray::NotObject);
        }
        if self.blank_lines {
            kinds.push(Stray::Blank);
        }
        kinds
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

/// Everything that shapes a generated journal besides its seed and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    /// How often each record kind appears.
    pub mix: Mix,
    /// The live-set size the generator steers toward (e.g. 200).
    pub live_target: usize,
    /// Faults to inject.
    pub faults: Faults,
}

impl Default for GenOptions {
    /// The benchmark's journal: [`Mix::benchmark`], ~200 live leases, no faults.
    fn default() -> Self {
        Self { mix: Mix::benchmark(), live_target: 200, faults: Faults::none() }
    }
}

/// A whole journal in memory: `records` lines (records and injected fault lines), plus a torn tail
/// when [`Faults::torn_tail`] draws one.
///
/// # Panics
/// Never: writing into a `Vec` cannot fail.
pub fn journal(seed: u64, records: usize, options: &GenOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.saturating_mul(256));
    write_journal(&mut out, seed, records, options).expect("writing to a Vec cannot fail");
    out
}

/// The same bytes as [`journal`], streamed into `out` one line at a time, so a million-record
/// journal never needs to be held in memory. Wrap a file in a `BufWriter`.
pub fn write_journal<W: Write>(mut out: W, seed: u64, records: usize, options: &GenOptions) -> io::Result<u64> {
    let mut generator = Generator::new(seed, options);
    let mut written = 0u64;
    for _ in 0..records {
        generator.line.clear();
        generator.next_line();
        out.write_all(&generator.line)?;
        written += generator.line.len() as u64;
    }
    generator.line.clear();
    generator.torn_tail();
    out.write_all(&generator.line)?;
    written += generator.line.len() as u64;
    out.flush()?;
    Ok(written)
}

#[derive(Debug, Clone, Copy)]
enum Stray {
    Corrupt,
    NotObject,
    Blank,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Acquire,
    Release,
    Heartbeat,
    Adopt,
    Reconcile,
    Scavenge,
    Refuse,
    Halt,
    Spawn,
    Checkpoint,
    Other,
}

/// A freshly drawn lease, before it is written as a record.
struct Drawn {
    body: String,
    ts: String,
    holder: String,
    host: &'static str,
    pid: u64,
    lane: &'static str,
    kind: &'static str,
    tree: &'static str,
    loop_ts: String,
}

/// A lease in the generator's model.
#[derive(Debug, Clone)]
struct Lease {
    loop_ts: String,
    lane: &'static str,
    body: String,
    pid: u64,
    generation: u64,
}

const LANES: [&str; 14] =
    ["api", "db", "docs", "tests", "kernel", "ui", "fs", "main", "x/y", "Straße", "ünï", "STRASSE", "Main", "infra"];
const TREES: [&str; 14] = [
    r#"["src/api/"]"#,
    r#"["src/api/handlers.rs"]"#,
    r#"["src/db/", "migrations/"]"#,
    r#"["**/*"]"#,
    r#"["*.toml"]"#,
    r#"["**/*", "src/db/[ab]*.sql"]"#,
    r#"["Src/API/"]"#,
    r#"["lock://deploy"]"#,
    r#"["docs\\guide\\"]"#,
    r#"[" src/ui/ "]"#,
    r#"["agents/apply_*.py"]"#,
    r#"["STRAßE/x"]"#,
    "[]",
    r#"["tests/", "lock://db"]"#,
];
const HOSTS: [&str; 3] = ["vm", "h", "build-7"];
const REFUSALS: [&str; 3] = [
    "an exclusive lane is live (lane='GLOBAL', kind='global', loop='2026-11-24T09:07:47Z'); it touches the whole portfolio — wait for it to finish.",
    "lane 'db' is already held by agent-3 (loop 2026-11-19T17:12:32Z)",
    "requested exclusive entry 'src/api/' collides with 'src/' held by agent-1",
];
/// Strings that stress escaping and line splitting (U+2028, U+2029, U+0085, a quote, a backslash).
const ODD_TEXT: [&str; 6] = [
    "agent\u{2028}x",
    "agent\u{2029}\u{85}y",
    "a \"quoted\" agent\\",
    "émoji 🚀",
    "tab\tand\u{1}ctl",
    "Straße\u{feff}",
];
/// 2026-11-01T00:00:00Z.
const EPOCH_S: u64 = 1_793_491_200;

struct Generator<'o> {
    rng: Rng,
    options: &'o GenOptions,
    strays: Vec<Stray>,
    seq: u64,
    clock_s: u64,
    loops: u64,
    live: Vec<Lease>,
    counter: u64,
    line: Vec<u8>,
    lines: u64,
}

impl<'o> Generator<'o> {
    fn new(seed: u64, options: &'o GenOptions) -> Self {
        Self {
            rng: Rng::new(mix64(seed ^ 0x6B65_656C_6A6F_7572)),
            options,
            strays: options.faults.stray_kinds(),
            seq: 0,
            clock_s: EPOCH_S + 22 * 86_400,
            loops: 0,
            live: Vec::new(),
            counter: 0,
            line: Vec::with_capacity(4096),
            lines: 0,
        }
    }

    fn faults_on(&self) -> bool {
        self.options.faults.per_mille > 0
    }

    /// Appends one line (a record or a stray fault line) to `self.line`.
    fn next_line(&mut self) {
        self.lines += 1;
        if self.faults_on() && !self.strays.is_empty() && self.rng.chance(self.options.faults.per_mille) {
            let kind = *self.rng.pick(&self.strays);
            self.stray(kind);
            return;
        }
        let odd = self.options.faults.odd_payloads && self.rng.chance(self.options.faults.per_mille);
        let op = self.pick_op();
        self.clock_s += self.rng.below(3);
        let record = match op {
            Op::Acquire | Op::Reconcile => self.grant(op, odd),
            Op::Release | Op::Scavenge => self.remove(op, odd),
            Op::Heartbeat => self.heartbeat(odd),
            Op::Adopt => self.adopt(odd),
            Op::Checkpoint => self.checkpoint(odd),
            Op::Refuse | Op::Halt | Op::Spawn | Op::Other => self.history(op, odd),
        };
        let wrap = self.options.faults.blank_lines && self.rng.chance(self.options.faults.per_mille);
        if wrap {
            let (before, after) =
                *self.rng.pick(&[("  ", "  "), ("", " \r"), ("\u{3000}", ""), ("\u{1c}", "\u{0b}"), ("\t", "\u{85}")]);
            self.line.extend_from_slice(before.as_bytes());
            self.line.extend_from_slice(record.as_bytes());
            self.line.extend_from_slice(after.as_bytes());
        } else {
            self.line.extend_from_slice(record.as_bytes());
        }
        if odd && self.rng.chance(80) {
            // Invalid UTF-8 inside a string: read back as U+FFFD.
            if let Some(at) = find(&self.line, b"\"ts\": \"") {
                self.line.splice(at + 7..at + 7, [0xFFu8, 0xFE]);
            }
        }
        self.line.push(b'\n');
    }

    fn pick_op(&mut self) -> Op {
        let mix = &self.options.mix;
        let total = mix.total();
        if total == 0 {
            return Op::Other;
        }
        let mut roll = self.rng.below(total);
        let table = [
            (mix.acquire, Op::Acquire),
            (mix.release, Op::Release),
            (mix.heartbeat, Op::Heartbeat),
            (mix.adopt, Op::Adopt),
            (mix.reconcile, Op::Reconcile),
            (mix.scavenge, Op::Scavenge),
            (mix.refuse, Op::Refuse),
            (mix.halt, Op::Halt),
            (mix.spawn, Op::Spawn),
            (mix.checkpoint, Op::Checkpoint),
            (mix.other, Op::Other),
        ];
        let mut op = Op::Other;
        for (weight, candidate) in table {
            if roll < u64::from(weight) {
                op = candidate;
                break;
            }
            roll -= u64::from(weight);
        }
        // Steer churn toward the live-set target: grant below it, remove above it.
        let grant_weight = u64::from(mix.acquire) + u64::from(mix.reconcile);
        let remove_weight = u64::from(mix.release) + u64::from(mix.scavenge);
        if matches!(op, Op::Acquire | Op::Reconcile | Op::Release | Op::Scavenge)
            && grant_weight > 0
            && remove_weight > 0
        {
            let target = self.options.live_target.max(1) as u64;
            let live = self.live.len() as u64;
            // P(grant) in per-mille: 500 at the target, 900 when empty, 100 at twice the target.
            let grant_per_mille = if live >= 2 * target { 100 } else { (900 - 400 * live / target) as u32 };
            op = if self.rng.chance(grant_per_mille) {
                if self.rng.below(grant_weight) < u64::from(mix.acquire) { Op::Acquire } else { Op::Reconcile }
            } else if self.rng.below(remove_weight) < u64::from(mix.release) {
                Op::Release
            } else {
                Op::Scavenge
            };
        }
        op
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn ts(&self) -> String {
        iso_utc(self.clock_s)
    }

    /// The `seq` member: the next number, or under odd payloads sometimes a float, a string, a
    /// negative number, or nothing.
    fn seq_member(&mut self, object: &mut Obj, odd: bool) {
        let seq = self.next_seq();
        if !odd {
            object.int("seq", seq);
            return;
        }
        match self.rng.below(6) {
            0 => object.raw("seq", format!("{seq}.0")),
            1 => object.raw("seq", format!("\"{seq}\"")),
            2 => object.raw("seq", "-3".to_owned()),
            3 => {}
            4 => object.raw("seq", format!("{seq}.75")),
            _ => object.int("seq", seq),
        }
    }

    fn agent(&mut self) -> String {
        format!("agent-{}", self.rng.below(8))
    }

    fn new_loop_ts(&mut self) -> String {
        self.loops += 1;
        // Unique per lease: one loop start every 61 s from the epoch, a few days before "now".
        iso_utc(EPOCH_S + self.loops * 61)
    }

    /// An identity member: plain text, or under odd payloads an escaped spelling of the same text.
    fn text_member(&mut self, object: &mut Obj, key: &'static str, text: &str, odd: bool) {
        if odd && self.rng.chance(300) {
            object.raw(key, escape_everything(text));
        } else {
            object.str(key, text);
        }
    }

    /// Draws a new lease: its facts and its body as dos-kernel writes it.
    fn draw_lease(&mut self) -> Drawn {
        let ts = self.ts();
        let holder = self.agent();
        let host = *self.rng.pick(&HOSTS);
        let pid = 1000 + self.rng.below(60_000);
        let starttime = 20_000 + self.rng.below(20_000);
        let lane = *self.rng.pick(&LANES);
        let kind = if matches!(lane, "main" | "Main") {
            "cluster"
        } else if self.rng.chance(5) {
            "global"
        } else {
            "keyword"
        };
        let mode = if self.rng.chance(300) { "shared" } else { "exclusive" };
        let tree = *self.rng.pick(&TREES);
        let loop_ts = self.new_loop_ts();
        let mut body = Obj::default();
        body.str("acquired_at", &ts);
        body.str("holder", &holder);
        body.str("host_id", host);
        body.str("lane", lane);
        body.str("lane_kind", kind);
        body.str("loop_ts", &loop_ts);
        body.str("mode", mode);
        body.int("pid", pid);
        body.int("proc_starttime", starttime);
        body.raw("tree", tree.to_owned());
        Drawn { body: body.finish(), ts, holder, host, pid, lane, kind, tree, loop_ts }
    }

    fn grant(&mut self, op: Op, odd: bool) -> String {
        let Drawn { body, ts, holder, host, pid, lane, kind, tree, loop_ts } = self.draw_lease();
        let mut record = Obj::default();
        let mut model_body = body.clone();
        let mut identity = (loop_ts.clone(), lane);
        let odd_kind = if odd { self.rng.below(8) } else { u64::MAX };
        if op == Op::Acquire {
            record.str("op", "ACQUIRE");
            record.str("host_id", host);
            record.str("lane_kind", kind);
            record.int("pid", pid);
            record.null("prev_holder");
            record.str("reason", &format!("lane-lease:{holder}"));
            record.raw("tree", tree.to_owned());
            record.str("ts", &ts);
            record.null("ttl_minutes");
            let mis_keyed = self.options.faults.mis_keyed_leases && self.rng.chance(self.options.faults.per_mille);
            match odd_kind {
                // `lease` not an object: the body is built from the record's members.
                0 => {
                    let junk = *self.rng.pick(&["null", "\"lease\"", "[1, 2]", "7"]);
                    record.raw("lease", junk.to_owned());
                    record.str("holder", &holder);
                }
                // `loop_ts` as a number, bool or null: identity text "1700000123", "True", "".
                1 => {
                    let spelled = *self.rng.pick(&["1700000123", "true", "null", "1.5", "0"]);
                    record.raw("loop_ts", spelled.to_owned());
                    record.raw("lease", "null".to_owned());
                    identity.0 = String::new();
                    model_body = String::new();
                }
                // Duplicate keys: the last one wins.
                2 => {
                    record.str("lane", "decoy");
                    record.raw("lease", body.clone());
                }
                // Odd text in the body.
                3 => {
                    let text = *self.rng.pick(&ODD_TEXT);
                    let odd_body = body.replacen(
                        &format!("\"holder\": \"{holder}\""),
                        &format!("\"holder\": {}", json_string(text)),
                        1,
                    );
                    record.raw("lease", odd_body.clone());
                    model_body = odd_body;
                }
                // An empty identity: ignored.
                4 => {
                    record.str("lane", "");
                    record.str("loop_ts", "");
                    record.raw("lease", body.clone());
                    identity.0 = String::new();
                    model_body = String::new();
                }
                _ if mis_keyed => {
                    let other = self.new_loop_ts();
                    model_body = body.replacen(&loop_ts, &other, 1);
                    record.raw("lease", model_body.clone());
                }
                _ => record.raw("lease", body.clone()),
            }
        } else {
            // RECONCILE as dos-kernel writes it: no `lease`, the body comes from the members.
            record.str("op", "RECONCILE");
            record.str("holder", &holder);
            record.str("lane_kind", kind);
            record.int("pid", pid);
            record.raw("tree", tree.to_owned());
            record.str("ts", &ts);
            let mut members = Obj::default();
            members.str("holder", &holder);
            members.str("lane", lane);
            members.str("lane_kind", kind);
            members.str("loop_ts", &loop_ts);
            members.int("pid", pid);
            members.raw("tree", tree.to_owned());
            model_body = members.finish();
        }
        if !record.has("loop_ts") {
            let loop_ts = identity.0.clone();
            self.text_member(&mut record, "loop_ts", &loop_ts, odd);
        }
        if !record.has("lane") || record.last_is("lane", "\"decoy\"") {
            self.text_member(&mut record, "lane", lane, odd);
        }
        self.seq_member(&mut record, odd && odd_kind >= 5);
        if !identity.0.is_empty() && !model_body.is_empty() {
            self.counter += 1;
            self.live.push(Lease {
                loop_ts: identity.0,
                lane: identity.1,
                body: model_body,
                pid,
                generation: self.counter,
            });
        }
        record.finish()
    }

    /// Picks a live lease (mostly) or a made-up identity; removes it from the model when `take`.
    fn target(&mut self, take: bool) -> (String, &'static str, Option<Lease>) {
        if !self.live.is_empty() && !self.rng.chance(60) {
            let at = self.rng.index(self.live.len());
            let lease = if take { self.live.remove(at) } else { self.live[at].clone() };
            return (lease.loop_ts.clone(), lease.lane, Some(lease));
        }
        let loop_ts = iso_utc(EPOCH_S + self.rng.below(1 + self.loops) * 61);
        (loop_ts, *self.rng.pick(&LANES), None)
    }

    fn remove(&mut self, op: Op, odd: bool) -> String {
        let (loop_ts, lane, _) = self.target(true);
        let ts = self.ts();
        let mut record = Obj::default();
        if op == Op::Release {
            record.str("op", "RELEASE");
            record.str("host_id", "vm");
            let holder = self.agent();
            record.str("reason", &format!("lane-lease:{holder}"));
        } else {
            record.str("op", "SCAVENGE");
            record.str("host_id", "h");
            record.int("pid", 1);
            let holder = self.agent();
            record.str("prev_holder", &holder);
            record.str("reason", "scavenged");
        }
        record.str("ts", &ts);
        if odd && self.rng.chance(200) {
            // A lane spelled in another case is another identity: nothing is removed.
            record.str("lane", &lane.to_uppercase());
        } else {
            self.text_member(&mut record, "lane", lane, odd);
        }
        self.text_member(&mut record, "loop_ts", &loop_ts, odd);
        self.seq_member(&mut record, odd);
        record.finish()
    }

    fn heartbeat(&mut self, odd: bool) -> String {
        let (loop_ts, lane, _) = self.target(false);
        let ts = self.ts();
        let mut record = Obj::default();
        record.str("op", "HEARTBEAT");
        record.str("host_id", "vm");
        if odd {
            let beat = *self.rng.pick(&["null", "\"\"", "false", "1700000000", "0"]);
            record.raw("heartbeat_at", beat.to_owned());
            if self.rng.chance(500) {
                record.str("ts", &ts);
            }
        } else {
            record.str("heartbeat_at", &ts);
            record.str("ts", &ts);
        }
        self.text_member(&mut record, "lane", lane, odd);
        self.text_member(&mut record, "loop_ts", &loop_ts, odd);
        self.seq_member(&mut record, odd);
        record.finish()
    }

    fn adopt(&mut self, odd: bool) -> String {
        let (loop_ts, lane, lease) = self.target(false);
        let ts = self.ts();
        let holder = self.agent();
        let old_pid = lease.as_ref().map_or(7, |l| l.pid);
        let mut record = Obj::default();
        record.str("op", "ADOPT");
        record.str("heartbeat_at", &ts);
        record.str("host_id", "vm");
        record.str("holder", &holder);
        record.str("prev_holder", "agent-1");
        record.str("reason", &format!("adopt:{holder}"));
        record.str("ts", &ts);
        match self.rng.below(4) {
            0 => record.int("pid", old_pid),
            1 => {
                record.int("pid", old_pid + 1);
                record.int("proc_starttime", 30_000 + self.rng.below(9_000));
            }
            2 => record.int("pid", 1000 + self.rng.below(60_000)),
            _ => record.null("pid"),
        }
        if self.options.faults.python_equal_numbers && self.rng.chance(self.options.faults.per_mille) {
            // Python: 7.0 == 7, so the pid did not change and proc_starttime stays.
            record.remove("pid");
            record.raw("pid", format!("{old_pid}.0"));
        }
        if odd && self.rng.chance(300) {
            record.remove("holder");
            record.null("holder");
            record.null("proc_starttime");
        }
        self.text_member(&mut record, "lane", lane, odd);
        self.text_member(&mut record, "loop_ts", &loop_ts, odd);
        self.seq_member(&mut record, odd);
        record.finish()
    }

    fn checkpoint(&mut self, odd: bool) -> String {
        // A compaction's output: the live set, the generation table, the watermark.
        let mut leases: Vec<String> = self.live.iter().map(|l| l.body.clone()).collect();
        let mut rows: Vec<(String, &'static str, String)> =
            self.live.iter().map(|l| (l.loop_ts.clone(), l.lane, l.generation.to_string())).collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        if odd {
            match self.rng.below(5) {
                0 => leases.push("\"not a lease\"".to_owned()),
                1 => leases.push(r#"{"lane": "", "loop_ts": ""}"#.to_owned()),
                2 => {
                    if let Some(first) = leases.first().cloned() {
                        leases.push(first.replacen("\"mode\": \"", "\"mode\": \"re", 1));
                    }
                }
                3 => rows.push(("2026-11-01T00:00:01Z".into(), "db", "2.0".into())),
                _ => rows.push(("2026-11-01T00:00:02Z".into(), "ui", "\"9\"".into())),
            }
        }
        let mut record = Obj::default();
        record.str("op", "CHECKPOINT");
        record.raw("leases", format!("[{}]", leases.join(", ")));
        if !rows.is_empty() {
            let rows: Vec<String> = rows
                .iter()
                .map(|(loop_ts, lane, generation)| {
                    format!(
                        "{{\"generation\": {generation}, \"lane\": {}, \"loop_ts\": {}}}",
                        json_string(lane),
                        json_string(loop_ts)
                    )
                })
                .collect();
            record.raw("generations", format!("[{}]", rows.join(", ")));
        }
        record.int("seq_watermark", self.seq);
        let mut text = record.finish();
        if odd && self.rng.chance(500) {
            // Sentinels an earlier compaction carried forward.
            text.push('\n');
            write!(text, "{{\"_line\": {}, \"_raw\": \"not json at all\", \"op\": \"_CORRUPT\"}}", self.lines)
                .expect("writing to a String cannot fail");
        }
        text
    }

    fn history(&mut self, op: Op, odd: bool) -> String {
        let ts = self.ts();
        let holder = self.agent();
        let lane = *self.rng.pick(&LANES);
        let mut record = Obj::default();
        match op {
            Op::Refuse => {
                record.str("op", "REFUSE");
                record.str("holder", &holder);
                record.str("host_id", "vm");
                record.str("lane", lane);
                let loop_ts = self.new_loop_ts();
                record.str("loop_ts", &loop_ts);
                let reason = *self.rng.pick(&REFUSALS);
                record.str("reason", reason);
                record.str("reason_class", "");
                record.null("run_id");
            }
            Op::Halt => {
                record.str("op", "HALT");
                record.null("command");
                record.str("handle", &self.rng.below(9000).to_string());
                record.null("host_id");
                record.str("lane", lane);
                record.str("loop_ts", "");
                record.str("reason", "stop");
                record.null("run_id");
            }
            Op::Spawn => {
                record.str("op", "SPAWN");
                record.str("holder", &holder);
                record.str("host_id", "vm");
                record.str("lane", lane);
                let loop_ts = self.new_loop_ts();
                record.str("loop_ts", &loop_ts);
                record.int("pid", 1000 + self.rng.below(60_000));
                record.str("reason", &format!("spawn:{holder}"));
            }
            _ => {
                let name = *self.rng.pick(&["ATTEMPT", "ENFORCE", "FUTURE_OP"]);
                if odd && self.rng.chance(500) {
                    // Not a string, or not an op this format knows: history all the same.
                    let spelled = *self.rng.pick(&["5", "null", "\"acquire\"", "[\"ACQUIRE\"]"]);
                    record.raw("op", spelled.to_owned());
                } else {
                    record.str("op", name);
                }
                record.str("lane", lane);
                let loop_ts = self.new_loop_ts();
                record.str("loop_ts", &loop_ts);
                record.str("note", "forensic");
            }
        }
        record.str("ts", &ts);
        self.seq_member(&mut record, odd);
        record.finish()
    }

    fn stray(&mut self, kind: Stray) {
        let text: String = match kind {
            Stray::Corrupt => match self.rng.below(3) {
                0 => "not json at all".to_owned(),
                1 => "{\"op\": \"ACQUIRE\", \"lane\": \"tor".to_owned(),
                _ => {
                    // A repaired torn write: the front of a record.
                    let live = self.live.len();
                    let record = self.grant(Op::Acquire, false);
                    self.live.truncate(live);
                    let cut = 1 + self.rng.index(record.len() - 1);
                    let cut = floor_char_boundary(&record, cut);
                    record[..cut.max(1)].to_owned()
                }
            },
            Stray::NotObject => {
                (*self.rng.pick(&["[1, 2, 3]", "\"str\"", "42", "null", "true", "{}", "{\"seq\": 3}"])).to_owned()
            }
            Stray::Blank => (*self.rng.pick(&["", "   ", "\t", "\r", "\u{3000}"])).to_owned(),
        };
        self.line.extend_from_slice(text.as_bytes());
        self.line.push(b'\n');
    }

    fn torn_tail(&mut self) {
        if !(self.faults_on() && self.options.faults.torn_tail && self.rng.chance(333)) {
            return;
        }
        let record = self.grant(Op::Acquire, false);
        let cut = floor_char_boundary(&record, 1 + self.rng.index(record.len() - 1)).max(1);
        self.line.extend_from_slice(&record.as_bytes()[..cut]);
        if self.rng.chance(500) {
            self.line.push(b'\n');
        }
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A record under construction: members with their JSON already rendered, written with keys
/// sorted (a stable sort, so a duplicate key keeps its place after the first).
#[derive(Default)]
struct Obj {
    members: Vec<(&'static str, String)>,
}

impl Obj {
    fn str(&mut self, key: &'static str, value: &str) {
        self.members.push((key, json_string(value)));
    }

    fn int(&mut self, key: &'static str, value: u64) {
        self.members.push((key, value.to_string()));
    }

    fn null(&mut self, key: &'static str) {
        self.members.push((key, "null".to_owned()));
    }

    fn raw(&mut self, key: &'static str, json: String) {
        self.members.push((key, json));
    }

    fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| *k != key);
    }

    fn has(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| *k == key)
    }

    fn last_is(&self, key: &str, json: &str) -> bool {
        self.members.iter().rev().find(|(k, _)| *k == key).is_some_and(|(_, v)| v == json)
    }

    fn finish(mut self) -> String {
        self.members.sort_by_key(|(key, _)| *key);
        let mut out = String::with_capacity(256);
        out.push('{');
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('"');
            out.push_str(key);
            out.push_str("\": ");
            out.push_str(value);
        }
        out.push('}');
        out
    }
}

/// A JSON string as Python's `json.dumps(..., ensure_ascii=False)` writes it.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a String cannot fail");
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON string with every character escaped (`\u0061`, surrogate pairs above the BMP): the same
/// value as [`json_string`], spelled so no fast path can borrow it.
fn escape_everything(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            write!(out, "\\u{unit:04x}").expect("writing to a String cannot fail");
        }
    }
    out.push('"');
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (proleptic Gregorian, UTC).
pub fn iso_utc(epoch_s: u64) -> String {
    let days = epoch_s / 86_400;
    let second_of_day = epoch_s % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level keys of an object, in the order they are written.
    struct KeysInOrder(Vec<String>);

    impl<'de> serde::Deserialize<'de> for KeysInOrder {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = KeysInOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeysInOrder, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, serde::de::IgnoredAny)) = map.next_entry::<String, _>()? {
                        keys.push(key);
                    }
                    Ok(KeysInOrder(keys))
                }
            }
            deserializer.deserialize_map(Visitor)
        }
    }

    #[test]
    fn iso_utc_matches_known_instants() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(EPOCH_S), "2026-11-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
        let options = GenOptions { mix: Mix::everything(), faults: Faults::all(100), ..GenOptions::default() };
        let a = journal(11, 300, &options);
        assert_eq!(a, journal(11, 300, &options));
        assert_ne!(a, journal(12, 300, &options));
    }

    #[test]
    fn a_clean_journal_is_one_sorted_object_per_line() {
        let bytes = journal(3, 2000, &GenOptions::default());
        let text = std::str::from_utf8(&bytes).expect("clean journals are UTF-8");
        assert!(text.ends_with('\n'));
        let mut seq = 0;
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("a record");
            let record = value.as_object().expect("an object");
            let keys = serde_json::from_str::<KeysInOrder>(line).expect("an object").0;
            assert!(keys.is_sorted(), "keys sorted: {line}");
            let next = record["seq"].as_u64().expect("seq");
            assert_eq!(next, seq + 1, "seq rises by one: {line}");
            seq = next;
        }
        assert_eq!(seq, 2000);
    }

    #[test]
    fn the_benchmark_mix_averages_about_240_bytes_and_keeps_about_200_leases_live() {
        let options = GenOptions::default();
        let bytes = journal(5, 20_000, &options);
        let average = bytes.len() / 20_000;
        assert!((200..=280).contains(&average), "average record {average} B");
        let state = keel_kernel::replay_bytes(&bytes).state;
        let live = state.live_count();
        assert!((120..=300).contains(&live), "{live} live leases");
    }

    #[test]
    fn every_fault_kind_shows_up_when_switched_on() {
        let options = GenOptions { mix: Mix::everything(), live_target: 20, faults: Faults::all(150) };
        let (mut blank, mut not_object, mut unparseable, mut torn) = (0, 0, 0, 0);
        for seed in 0..20 {
            let bytes = journal(seed, 400, &options);
            let replayed = crate::reference::replay(&bytes);
            torn += usize::from(replayed.torn_tail.is_some());
            for line in String::from_utf8_lossy(&bytes).split('\n') {
                match serde_json::from_str::<serde_json::Value>(line.trim()) {
                    _ if line.trim().is_empty() => blank += 1,
                    Ok(serde_json::Value::Object(_)) => {}
                    Ok(_) => not_object += 1,
                    Err(_) => unparseable += 1,
                }
            }
        }
        assert!(blank > 0 && not_object > 0 && unparseable > 0 && torn > 0);
    }
}
