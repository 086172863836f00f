//! `cargo xtask bench mcp`: tool round trips of `keel mcp` (the shipped binary, a child process
//! on stdio, as an agent's harness starts it) seen from rmcp's own client, in a workspace holding
//! 100 live leases of another agent:
//! - `lease_check` of two paths (one held by the other agent, one free) against 0.3 ms;
//! - `lease_acquire` of a fresh path (each followed by its `lease_release`), less one fdatasync'd
//!   append measured on the same disk, against 0.3 ms: an acquire should cost its one fdatasync
//!   and little else;
//! - an MCP `ping`, in turns with `lease_check`: what the transport and the client cost alone.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, ClientRequest, JsonObject, PingRequest, ServerResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use crate::bench::{bench_dir, fdatasync_bound, median, report};
use crate::bench_hook::{LIVE, workspace};

/// Round trips before any timing: the first calls open the journal and fill caches.
const WARM_UP: usize = 50;
/// `lease_check` round trips timed (and as many pings, in turns).
const CHECKS: usize = 2000;
/// `lease_acquire` + `lease_release` cycles timed.
const CYCLES: usize = 500;
/// Targets: a check within 0.3 ms; an acquire within one fdatasync plus 0.3 ms.
const CHECK_MS_MAX: f64 = 0.3;
const ACQUIRE_OVER_SYNC_MS_MAX: f64 = 0.3;

type Client = RunningService<RoleClient, ()>;

pub fn run() -> anyhow::Result<()> {
    crate::dist::run()?;
    let dir = bench_dir()?.join("mcp");
    let root = workspace(&dir.join("workspace"), LIVE)?;
    let sync = fdatasync_bound(&dir)?;
    // One thread, as the server has: no cross-thread wake-ups in the client's share of a round trip.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(session(&root, sync))
}

async fn session(root: &Path, sync: Duration) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(crate::dist::binary());
    command.arg("mcp").current_dir(root).env("KEEL_OWNER", "agent-a");
    let transport = TokioChildProcess::new(command).context("starting keel mcp")?;
    let client = ().serve(transport).await.context("the MCP handshake with keel mcp")?;

    // The decisions must be what they claim before they are timed.
    let check = arguments(json!({"paths": ["held/7/x.rs", "own/x.rs"]}));
    let answer = call(&client, "lease_check", check.clone()).await?;
    let allowed = [0, 1].map(|i| answer["checks"][i]["allowed"].as_bool());
    if allowed != [Some(false), Some(true)] {
        bail!("lease_check did not decide as expected (held/7/x.rs refused, own/x.rs allowed): {answer}");
    }

    for _ in 0..WARM_UP {
        ping(&client).await?;
        call(&client, "lease_check", check.clone()).await?;
    }
    // Pings and checks in turns, so a change of machine speed during the run hits both alike.
    let (mut pings, mut checks) = (Vec::with_capacity(CHECKS), Vec::with_capacity(CHECKS));
    for _ in 0..CHECKS {
        let started = Instant::now();
        ping(&client).await?;
        pings.push(started.elapsed());
        let arguments = check.clone();
        let started = Instant::now();
        call(&client, "lease_check", arguments).await?;
        checks.push(started.elapsed());
    }

    let (mut acquires, mut releases) = (Vec::with_capacity(CYCLES), Vec::with_capacity(CYCLES));
    for i in 0..WARM_UP + CYCLES {
        let acquire = arguments(json!({"paths": [format!("new/{i}/")]}));
        let started = Instant::now();
        let granted = call(&client, "lease_acquire", acquire).await?;
        let acquired = started.elapsed();
        let (Some(true), Some(lane)) = (granted["granted"].as_bool(), granted["lane"].as_str()) else {
            bail!("lease_acquire of the free path new/{i}/ was not granted: {granted}");
        };
        let release = arguments(json!({"lane": lane}));
        let started = Instant::now();
        let released = call(&client, "lease_release", release).await?;
        let elapsed = started.elapsed();
        if released["released"].as_array().is_none_or(Vec::is_empty) {
            bail!("lease_release of {lane} released nothing: {released}");
        }
        if i >= WARM_UP {
            acquires.push(acquired);
            releases.push(elapsed);
        }
    }
    // Closing stdin ends the session; the server gives back what is left (nothing) and exits.
    client.cancel().await.context("closing the MCP session")?;

    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    let (ping_p99, check_p99, acquire_p99) = (p99(&mut pings), p99(&mut checks), p99(&mut acquires));
    let (ping, check, acquire, release) =
        (median(&mut pings), median(&mut checks), median(&mut acquires), median(&mut releases));
    println!(
        "mcp: keel mcp (shipped binary) over stdio, rmcp client; {LIVE} live leases of another agent; \
         {WARM_UP} warm-up calls, then {CHECKS} checks and pings in turns, {CYCLES} acquire+release cycles"
    );
    println!("  MCP ping round trip (transport and rmcp alone): median {:.3} ms, p99 {:.3} ms", ms(ping), ms(ping_p99));
    println!(
        "  lease_check of 2 paths (1 refused, 1 allowed): median {:.3} ms, p99 {:.3} ms",
        ms(check),
        ms(check_p99)
    );
    println!(
        "  lease_acquire of a fresh path: median {:.3} ms, p99 {:.3} ms; lease_release median {:.3} ms",
        ms(acquire),
        ms(acquire_p99),
        ms(release)
    );
    println!("  append+fdatasync of a record-sized line (the bound): {:.3} ms", ms(sync));
    report("lease_check round trip, median", ms(check), CHECK_MS_MAX, " ms");
    report("lease_acquire median - fdatasync bound", ms(acquire) - ms(sync), ACQUIRE_OVER_SYNC_MS_MAX, " ms");
    Ok(())
}

fn arguments(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        _ => unreachable!("the arguments are written as JSON objects above"),
    }
}

/// One `tools/call`: its structured answer, or an error if the tool failed.
async fn call(client: &Client, tool: &'static str, arguments: JsonObject) -> anyhow::Result<Value> {
    let params = CallToolRequestParams::new(tool).with_arguments(arguments);
    let result = client.peer().call_tool(params).await.with_context(|| format!("calling {tool}"))?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {:?}", result.content);
    }
    result.structured_content.with_context(|| format!("{tool} answered without structured content"))
}

/// One MCP `ping` request, answered with an empty result.
async fn ping(client: &Client) -> anyhow::Result<()> {
    match client.peer().send_request(ClientRequest::PingRequest(PingRequest::default())).await {
        Ok(ServerResult::EmptyResult(_)) => Ok(()),
        Ok(other) => bail!("ping answered with {other:?}"),
        Err(error) => Err(error).context("ping"),
    }
}

fn p99(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() * 99 / 100]
}
