"""A stand-in agent harness: runs keel's hooks the way Claude Code does.

One process per agent. Each line on stdin is {"run": [argv...], "stdin": "...", "cwd": "..."}
(or {"command": "a command line", ...}, as a settings file holds it); the harness runs it
through `sh -c` (as Claude Code runs a hook command), with the event on its
stdin, and answers with one line {"code": N, "stdout": "...", "stderr": "..."}. Nothing else:
the hook must find the agent (this process) by itself.
"""

import json
import shlex
import subprocess
import sys

for line in sys.stdin:
    request = json.loads(line)
    command = request.get("command") or " ".join(shlex.quote(part) for part in request["run"])
    done = subprocess.run(
        ["sh", "-c", command],
        input=request.get("stdin", "").encode(),
        cwd=request.get("cwd"),
        capture_output=True,
    )
    answer = {"code": done.returncode, "stdout": done.stdout.decode(errors="replace"), "stderr": done.stderr.decode(errors="replace")}
    print(json.dumps(answer), flush=True)
