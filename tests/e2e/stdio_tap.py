"""A transparent wrapper around a stdio MCP server, for tests: records what it writes.

    python stdio_tap.py OUT ERR PID RC -- command args...

Runs the command with this process's stdin, relays its stdout unchanged and appends a
copy to OUT; its stderr goes to ERR. The child's pid goes to PID (so a test can signal
the server itself) and its exit status to RC. SIGTERM/SIGINT are passed on to it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    out_path, err_path, pid_path, rc_path = (Path(a) for a in argv[:4])
    command = argv[5:] if argv[4] == "--" else argv[4:]
    with err_path.open("ab") as err, out_path.open("ab") as out:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)  # stdin inherited

        def forward(sig: int, _frame: FrameType | None) -> None:
            child.send_signal(sig)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        pid_path.write_text(str(child.pid))
        assert child.stdout is not None
        for line in child.stdout:
            out.write(line)
            out.flush()
            try:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
            except BrokenPipeError:  # the client went away; keep recording until the child ends
                pass
        rc = child.wait()
    rc_path.write_text(str(rc))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
