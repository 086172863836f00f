#!/usr/bin/env python3
"""Capture real hook payloads from coding-agent harnesses driven by a fake model API.

Usage:
    python3 capture.py install                    # npm install the pinned harness versions
    python3 capture.py claude|codex|gemini|all    # run harness(es), hooks write out/<harness>/
    python3 capture.py collect DEST_DIR           # copy the events to DEST_DIR, stable names

Typical:  python3 capture.py install && python3 capture.py all &&
          python3 capture.py collect crates/keel-hook/tests/data/captured

Needs python3 (stdlib only), npm, git and coreutils `timeout`. Everything is written under
$CAPTURE_ROOT (default /work/capture): node/ (the npm installs), home-<harness>/ (a scratch
HOME, so no real user configuration is read or written), ws/ (a scratch git repository the
agent works in, recreated for each harness), out/<harness>/ (one JSON file per hook
invocation, written verbatim by the hook command) and log/ (every request each harness
sent to the fake server, the scripted steps, the harness's stdout/stderr).

The fake model server listens on 127.0.0.1 only, on an ephemeral port, and stops when
this script exits. It speaks just enough of the Anthropic Messages API (/v1/messages,
SSE when the client asks for `stream`), the OpenAI Responses API (/v1/responses, SSE)
and the Gemini API (:generateContent, :streamGenerateContent?alt=sse) to drive one
scripted conversation per harness: on each request that offers tools it answers with the
next scripted tool call (the script position follows from the tool calls already in the
conversation; steps whose tool the harness does not offer are skipped); once the script
is done it answers with plain text ("Done.") and the turn ends. Requests without tools
(title generation, classifiers) get a benign text answer, or a minimal instance of the
requested JSON schema. Each harness run is wrapped in `timeout 120`.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.environ.get("CAPTURE_ROOT", "/work/capture")
NODE_PREFIX = os.path.join(ROOT, "node")
BIN = os.path.join(NODE_PREFIX, "node_modules", ".bin")
PACKAGES = {
    "claude": ("@anthropic-ai/claude-code", "2.1.332"),
    "codex": ("@openai/codex", "0.171.0"),
    "gemini": ("@google/gemini-cli", "0.61.0"),
}

STATE = {"steps": [], "log": None, "lock": threading.Lock()}


def log_request(path, body):
    with STATE["lock"]:
        if STATE["log"]:
            with open(STATE["log"], "a") as f:
                f.write(json.dumps({"t": time.time(), "path": path, "body": body}) + "\n")


def step_for(tools, called):
    """Return the next scripted step, or None for a text answer.

    `called` is the list of tool names the model already called in this conversation;
    they are matched in order against the script. Steps whose tool the harness does not
    offer in this request are skipped (e.g. a tool that a harness version no longer has).
    """
    steps = STATE["steps"]
    p = 0
    for name in called:
        while p < len(steps) and steps[p]["name"] != name:
            p += 1
        p += 1
    while p < len(steps) and steps[p]["name"] not in tools:
        p += 1
    return steps[p] if p < len(steps) else None, p


# ---------------------------------------------------------------- Anthropic ----

def anthropic_reply(body):
    tools = [t.get("name") for t in body.get("tools") or []]
    called = []
    for m in body.get("messages") or []:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            called += [c.get("name") for c in m["content"] if c.get("type") == "tool_use"]
    step, n_results = step_for(tools, called)
    model = body.get("model", "claude-sonnet-4-5")
    if step is None:
        text = "Done." if tools else "none"
        return model, [{"type": "text", "text": text}], "end_turn"
    tid = "toolu_01Capture%02d%s" % (n_results, step["name"])
    return model, [{"type": "tool_use", "id": tid, "name": step["name"], "input": step["input"]}], "tool_use"


def anthropic_sse(model, content, stop):
    mid = "msg_01Capture" + uuid.uuid4().hex[:12]
    ev = []
    ev.append(("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}}))
    for i, block in enumerate(content):
        if block["type"] == "text":
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}}))
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "text_delta", "text": block["text"]}}))
        else:
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "tool_use", "id": block["id"],
                                                                 "name": block["name"], "input": {}}}))
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": json.dumps(block["input"])}}))
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": 5}}))
    ev.append(("message_stop", {"type": "message_stop"}))
    return "".join("event: %s\ndata: %s\n\n" % (k, json.dumps(v)) for k, v in ev)


# ----------------------------------------------------------- OpenAI Responses ----

def responses_reply(body):
    tools = []
    for t in body.get("tools") or []:
        tools.append(t.get("name") or (t.get("function") or {}).get("name") or t.get("type"))
    called = [item.get("name") for item in body.get("input") or []
              if item.get("type") in ("function_call", "custom_tool_call")]
    step, n_results = step_for(tools, called)
    rid = "resp_capture_" + uuid.uuid4().hex[:12]
    items = []
    if step is None:
        items.append({"type": "message", "role": "assistant", "id": "msg_" + uuid.uuid4().hex[:8],
                      "status": "completed",
                      "content": [{"type": "output_text", "text": "Done.", "annotations": []}]})
    else:
        call_id = "call_capture_%02d" % n_results
        if step.get("kind") == "custom":
            items.append({"type": "custom_tool_call", "id": "ctc_" + uuid.uuid4().hex[:8],
                          "status": "completed", "call_id": call_id, "name": step["name"],
                          "input": step["input"]})
        else:
            items.append({"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:8],
                          "status": "completed", "call_id": call_id, "name": step["name"],
                          "arguments": json.dumps(step["input"])})
    ev = [("response.created", {"type": "response.created",
                                "response": {"id": rid, "object": "response", "status": "in_progress",
                                             "output": []}})]
    for i, it in enumerate(items):
        ev.append(("response.output_item.added", {"type": "response.output_item.added",
                                                  "output_index": i, "item": it}))
        ev.append(("response.output_item.done", {"type": "response.output_item.done",
                                                 "output_index": i, "item": it}))
    ev.append(("response.completed", {"type": "response.completed", "response": {
        "id": rid, "object": "response", "status": "completed", "output": items,
        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 15}}}))
    return "".join("event: %s\ndata: %s\n\n" % (k, json.dumps(v)) for k, v in ev)


# ------------------------------------------------------------------- Gemini ----

def sample_for_schema(schema):
    """A minimal instance of a (Gemini-style) JSON schema."""
    t = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if t == "object":
        props = schema.get("properties") or {}
        req = schema.get("required") or list(props)
        return {k: sample_for_schema(props[k]) for k in req if k in props}
    if t == "array":
        return []
    if t in ("integer", "number"):
        return 1
    if t == "boolean":
        return False
    return "user"


def gemini_reply(body):
    tools = []
    for t in body.get("tools") or []:
        for fd in t.get("functionDeclarations") or []:
            tools.append(fd.get("name"))
    called = []
    for c in body.get("contents") or []:
        for p in c.get("parts") or []:
            if "functionCall" in p:
                called.append(p["functionCall"].get("name"))
    step, _ = step_for(tools, called)
    gen = body.get("generationConfig") or {}
    schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
    if step is None and not tools and schema:
        # Side requests (model routing classifier, next-speaker check, ...) want JSON.
        parts = [{"text": json.dumps(sample_for_schema(schema))}]
    elif step is None:
        parts = [{"text": "Done."}]
    else:
        parts = [{"functionCall": {"name": step["name"], "args": step["input"]}}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
            "modelVersion": "gemini-2.5-pro"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, code, ctype, data):
        if isinstance(data, str):
            data = data.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        log_request("GET " + self.path, None)
        if "/models" in self.path:
            self._send(200, "application/json", json.dumps({"data": [], "models": [], "object": "list"}))
        else:
            self._send(404, "application/json", json.dumps({"error": {"message": "not found"}}))

    def do_HEAD(self):
        self._send(200, "text/plain", "")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        log_request("POST " + self.path, body)
        path = self.path.split("?")[0]
        if path.endswith("/v1/messages/count_tokens"):
            self._send(200, "application/json", json.dumps({"input_tokens": 10}))
        elif path.endswith("/v1/messages"):
            model, content, stop = anthropic_reply(body)
            if body.get("stream"):
                self._send(200, "text/event-stream", anthropic_sse(model, content, stop))
            else:
                self._send(200, "application/json", json.dumps({
                    "id": "msg_01Capture" + uuid.uuid4().hex[:12], "type": "message",
                    "role": "assistant", "model": model, "content": content, "stop_reason": stop,
                    "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}))
        elif path.endswith("/responses"):
            self._send(200, "text/event-stream", responses_reply(body))
        elif ":streamGenerateContent" in path:
            self._send(200, "text/event-stream", "data: %s\n\n" % json.dumps(gemini_reply(body)))
        elif ":generateContent" in path:
            self._send(200, "application/json", json.dumps(gemini_reply(body)))
        elif ":countTokens" in path:
            self._send(200, "application/json", json.dumps({"totalTokens": 10}))
        elif ":embedContent" in path or ":batchEmbedContents" in path:
            self._send(200, "application/json", json.dumps({"embeddings": [{"values": [0.0] * 8}]}))
        else:
            self._send(404, "application/json", json.dumps({"error": {"message": "not found"}}))


def start_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv, srv.server_address[1]


# ------------------------------------------------------------------ drivers ----

def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def fresh_dir(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def make_workspace():
    # The same path for every harness (runs are sequential), so that captured paths agree.
    ws = fresh_dir(os.path.join(ROOT, "ws"))
    os.makedirs(os.path.join(ws, "src"))
    os.makedirs(os.path.join(ws, "notes"))
    with open(os.path.join(ws, "src", "a.rs"), "w") as f:
        f.write("fn a() {\n    let x = 1;\n}\n")
    with open(os.path.join(ws, "src", "lib.rs"), "w") as f:
        f.write("pub fn old() {}\n")
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
                     "outputs": [], "source": ["print(0)\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    with open(os.path.join(ws, "notes", "a.ipynb"), "w") as f:
        json.dump(nb, f, indent=1)
    env = dict(os.environ, GIT_AUTHOR_NAME="capture", GIT_AUTHOR_EMAIL="capture@example.invalid",
               GIT_COMMITTER_NAME="capture", GIT_COMMITTER_EMAIL="capture@example.invalid")
    sh(["git", "init", "-q", "-b", "main", ws], env=env)
    sh(["git", "-C", ws, "add", "-A"], env=env)
    sh(["git", "-C", ws, "commit", "-q", "-m", "init"], env=env)
    return ws


def hook_cmd(outdir):
    # Save stdin verbatim, print nothing, exit 0 (= allow / no opinion).
    return "cat > %s/$(date +%%s%%N)-$$.json" % outdir


def run_harness(name, argv, env, cwd, steps):
    STATE["steps"] = steps
    logdir = os.path.join(ROOT, "log")
    os.makedirs(logdir, exist_ok=True)
    STATE["log"] = os.path.join(logdir, name + "-requests.jsonl")
    open(STATE["log"], "w").close()
    with open(os.path.join(logdir, name + "-steps.json"), "w") as f:
        json.dump(steps, f, indent=2)
    print("+ (cd %s && %s)" % (cwd, " ".join(argv)), flush=True)
    p = subprocess.run(["timeout", "120"] + argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    with open(os.path.join(logdir, name + "-stdout.txt"), "w") as f:
        f.write(p.stdout)
    with open(os.path.join(logdir, name + "-stderr.txt"), "w") as f:
        f.write(p.stderr)
    print("exit %s; stdout tail: %s" % (p.returncode, p.stdout[-500:]), flush=True)
    if p.stderr.strip():
        print("stderr tail: %s" % p.stderr[-1500:], flush=True)
    return p


def base_env(home):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_"))}
    env["HOME"] = home
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["NO_COLOR"] = "1"
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_STATE_HOME", None)
    env.pop("XDG_CACHE_HOME", None)
    return env


def drive_claude(port):
    home = fresh_dir(os.path.join(ROOT, "home-claude"))
    out = fresh_dir(os.path.join(ROOT, "out", "claude"))
    ws = make_workspace()
    hooks = [{"matcher": "*", "hooks": [{"type": "command", "command": hook_cmd(out)}]}]
    settings = {"hooks": {"PreToolUse": hooks, "PostToolUse": hooks, "SessionEnd":
                          [{"hooks": [{"type": "command", "command": hook_cmd(out)}]}]}}
    os.makedirs(os.path.join(ws, ".claude"))
    with open(os.path.join(ws, ".claude", "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
    steps = [
        {"name": "Write", "label": "write", "input": {"file_path": ws + "/src/new.rs", "content": "fn main() {}\n"}},
        {"name": "Read", "label": "read", "input": {"file_path": ws + "/src/a.rs"}},
        {"name": "Edit", "label": "edit", "input": {"file_path": ws + "/src/a.rs", "old_string": "let x = 1;",
                                   "new_string": "let y = 1;"}},
        {"name": "MultiEdit", "label": "multi-edit", "input": {"file_path": ws + "/src/a.rs", "edits": [
            {"old_string": "fn a()", "new_string": "fn b()"}]}},
        # NotebookEdit is a deferred tool in recent versions: load its schema first.
        {"name": "ToolSearch", "label": "tool-search", "input": {"query": "select:NotebookEdit", "max_results": 1}},
        {"name": "Read", "label": "read-notebook", "input": {"file_path": ws + "/notes/a.ipynb"}},
        {"name": "NotebookEdit", "label": "notebook-edit", "input": {"notebook_path": ws + "/notes/a.ipynb", "cell_id": "c1",
                                           "new_source": "print(1)", "edit_mode": "replace"}},
        {"name": "Bash", "label": "bash", "input": {"command": "sed -i s/x/y/ src/a.rs",
                                   "description": "Rename x to y in a.rs"}},
    ]
    env = base_env(home)
    env.update({
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:%d" % port,
        "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    })
    argv = ["claude", "-p", "Make the scripted edits.", "--output-format", "json",
            "--allowedTools", "Write,Read,Edit,MultiEdit,NotebookEdit,Bash,ToolSearch"]
    return run_harness("claude", argv, env, ws, steps)


def drive_codex(port):
    home = fresh_dir(os.path.join(ROOT, "home-codex"))
    codex_home = os.path.join(home, ".codex")
    os.makedirs(codex_home)
    out = fresh_dir(os.path.join(ROOT, "out", "codex"))
    ws = make_workspace()
    with open(os.path.join(codex_home, "config.toml"), "w") as f:
        f.write(CODEX_CONFIG % {"port": port})
    group = [{"matcher": "*", "hooks": [{"type": "command", "command": hook_cmd(out)}]}]
    plain = [{"hooks": [{"type": "command", "command": hook_cmd(out)}]}]
    hooks = {"hooks": {"PreToolUse": group, "PostToolUse": group, "SessionEnd": plain}}
    with open(os.path.join(codex_home, "hooks.json"), "w") as f:
        json.dump(hooks, f, indent=2)
    steps = CODEX_STEPS
    env = base_env(home)
    env.update({"CODEX_HOME": codex_home, "FAKE_MODEL_API_KEY": "dummy"})
    argv = ["codex", "exec", "--dangerously-bypass-hook-trust", "--sandbox", "workspace-write",
            "--skip-git-repo-check", "Make the scripted edits."]
    return run_harness("codex", argv, env, ws, steps)


CODEX_CONFIG = """\
model = "gpt-5.5"
model_provider = "fake"

[model_providers.fake]
name = "fake"
base_url = "http://127.0.0.1:%(port)d/v1"
wire_api = "responses"
env_key = "FAKE_MODEL_API_KEY"
"""

CODEX_STEPS = [
    {"name": "apply_patch", "label": "apply-patch-add", "kind": "custom", "input":
        "*** Begin Patch\n*** Add File: src/new.rs\n+fn main() {}\n*** End Patch\n"},
    {"name": "apply_patch", "label": "apply-patch-update", "kind": "custom", "input":
        "*** Begin Patch\n*** Update File: src/lib.rs\n@@\n-pub fn old() {}\n+pub fn new() {}\n*** End Patch\n"},
    {"name": "apply_patch", "label": "apply-patch-update-and-add", "kind": "custom", "input":
        "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-    let x = 1;\n+    let z = 1;\n"
        "*** Add File: src/other.rs\n+pub fn other() {}\n*** End Patch\n"},
    {"name": "exec_command", "label": "bash", "input": {"cmd": "sed -i s/z/y/ src/a.rs"}},
    {"name": "exec_command", "label": "bash-workdir",
     "input": {"cmd": "sed -i 's/new/newer/' lib.rs", "workdir": "src"}},
]


def drive_gemini(port):
    home = fresh_dir(os.path.join(ROOT, "home-gemini"))
    out = fresh_dir(os.path.join(ROOT, "out", "gemini"))
    ws = make_workspace()
    group = [{"matcher": "*", "hooks": [{"type": "command", "command": hook_cmd(out)}]}]
    plain = [{"hooks": [{"type": "command", "command": hook_cmd(out)}]}]
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "hooks": {"BeforeTool": group, "AfterTool": group, "SessionEnd": plain},
    }
    os.makedirs(os.path.join(home, ".gemini"))
    with open(os.path.join(home, ".gemini", "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
    steps = [
        {"name": "write_file", "label": "write-file", "input": {"file_path": ws + "/src/new.rs", "content": "fn main() {}\n"}},
        {"name": "read_file", "label": "read-file", "input": {"file_path": ws + "/src/a.rs"}},
        {"name": "replace", "label": "replace", "input": {"file_path": ws + "/src/a.rs", "old_string": "let x = 1;",
                                      "new_string": "let y = 1;", "instruction": "Rename x to y."}},
        {"name": "run_shell_command", "label": "run-shell-command", "input": {"command": "sed -i s/y/z/ src/a.rs",
                                                "description": "Rename y to z in a.rs"}},
        {"name": "run_shell_command", "label": "run-shell-command-dir-path", "input": {"command": "sed -i 's/old/new/' lib.rs",
                                                "dir_path": "src", "description": "Rename old to new"}},
    ]
    env = base_env(home)
    env.update({"GEMINI_API_KEY": "dummy", "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:%d" % port,
                "GEMINI_CLI_NO_RELAUNCH": "true", "GEMINI_CLI_TRUST_WORKSPACE": "true"})
    argv = ["gemini", "--approval-mode", "yolo", "--output-format", "json", "-p",
            "Make the scripted edits."]
    return run_harness("gemini", argv, env, ws, steps)


# ------------------------------------------------------------------ collect ----

PREFIX = {"claude": "claude-code", "codex": "codex", "gemini": "gemini"}
TOOL_ALIASES = {"exec_command": "Bash"}  # what Codex reports for its unified exec tool


def kebab(name):
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out += "-"
        out += ch.lower()
    return out


def step_key(step):
    value = step["input"] if isinstance(step["input"], str) else next(iter(step["input"].values()))
    return json.dumps(value)


def label_for(event, steps):
    if "tool_name" not in event:
        return None
    blob = json.dumps(event.get("tool_input"))
    for step in steps:
        if (TOOL_ALIASES.get(step["name"], step["name"]) == event["tool_name"]
                and step_key(step) in blob):
            return step["label"]
    return kebab(event["tool_name"]).replace("_", "-")


def collect(dest):
    os.makedirs(dest, exist_ok=True)
    for h, (pkg, _) in PACKAGES.items():
        outdir = os.path.join(ROOT, "out", h)
        steps_file = os.path.join(ROOT, "log", h + "-steps.json")
        if not os.path.isdir(outdir) or not os.path.exists(steps_file):
            continue
        with open(os.path.join(NODE_PREFIX, "node_modules", pkg, "package.json")) as f:
            version = json.load(f)["version"]
        with open(steps_file) as f:
            steps = json.load(f)
        for fn in sorted(os.listdir(outdir)):
            with open(os.path.join(outdir, fn)) as f:
                raw = f.read()
            event = json.loads(raw)
            parts = [PREFIX[h], version, kebab(event["hook_event_name"])]
            label = label_for(event, steps)
            if label:
                parts.append(label)
            name = "-".join(parts) + ".json"
            n = 2
            while os.path.exists(os.path.join(dest, name)) and name in seen_names:
                name = "-".join(parts) + "-%d.json" % n
                n += 1
            seen_names.add(name)
            with open(os.path.join(dest, name), "w") as f:
                json.dump(event, f, indent=2, ensure_ascii=False)
                f.write("\n")
            print(name)


seen_names = set()


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        return 2
    if args[0] == "install":
        specs = ["%s@%s" % v for v in PACKAGES.values()]
        sh(["npm", "install", "--prefix", NODE_PREFIX] + specs)
        return 0
    if args[0] == "collect":
        collect(args[1])
        return 0
    which = ["claude", "codex", "gemini"] if args[0] == "all" else [args[0]]
    srv, port = start_server()
    print("fake model server on 127.0.0.1:%d" % port, flush=True)
    try:
        for h in which:
            globals()["drive_" + h](port)
    finally:
        srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
