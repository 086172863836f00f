"""A stand-in agent: one process that talks to `keel mcp` through the official MCP Python SDK,
as a harness does, and runs keel's hook the way Claude Code does (`sh -c`, event on stdin).

Usage: mcp_agent.py KEEL CWD [--registered]. With --registered the server is started as Claude
Code starts it: the command, args and env of `mcpServers.keel` in CWD/.mcp.json, run in CWD.
Each line on stdin is one request; each gets one line of JSON back:
  {"op": "tools"}                          -> {"tools": [{"name", "description", "inputSchema"}]}
  {"op": "call", "tool": T, "args": {..}}  -> {"isError", "structured", "text"}
  {"op": "resources"}                      -> {"resources": [uri...]}
  {"op": "read", "uri": U}                 -> {"text"} or {"error"}
  {"op": "hook", "args": [..], "stdin": S} -> {"code", "stdout", "stderr"}
  {"op": "close"}                          -> {"closed": true} once the server has exited
"""

import asyncio
import os
import json
import subprocess
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

KEEL, CWD = sys.argv[1], sys.argv[2]
REGISTERED = sys.argv[3:] == ["--registered"]


def say(value):
    print(json.dumps(value), flush=True)


def result(res):
    text = "".join(getattr(block, "text", "") for block in res.content)
    return {"isError": bool(res.is_error), "structured": res.structured_content, "text": text}


async def serve_requests(session):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        request = json.loads(line)
        op = request["op"]
        if op == "close":
            return
        if op == "tools":
            tools = (await session.list_tools()).tools
            say({"tools": [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools]})
        elif op == "call":
            say(result(await session.call_tool(request["tool"], request.get("args", {}))))
        elif op == "resources":
            say({"resources": [str(r.uri) for r in (await session.list_resources()).resources]})
        elif op == "read":
            try:
                contents = (await session.read_resource(request["uri"])).contents
                say({"text": contents[0].text})
            except Exception as error:  # the server's JSON-RPC error, as the SDK raises it
                say({"error": str(error)})
        elif op == "hook":
            done = subprocess.run(
                ["sh", "-c", " ".join(["'" + a.replace("'", "'\\''") + "'" for a in [KEEL] + request["args"]])],
                input=request.get("stdin", "").encode(), cwd=CWD, capture_output=True,
            )
            say({"code": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode()})


async def main():
    command, args, env = KEEL, ["mcp"], dict(os.environ)
    if REGISTERED:
        with open(os.path.join(CWD, ".mcp.json")) as registry:
            server = json.load(registry)["mcpServers"]["keel"]
        command, args = server["command"], server.get("args", [])
        env.update(server.get("env", {}))
    params = StdioServerParameters(command=command, args=args, cwd=CWD, env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            say({"ready": True})
            await serve_requests(session)
    say({"closed": True})


asyncio.run(main())
