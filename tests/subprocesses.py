"""Several commands run as subprocesses at the same time: for the tests that run the real
`bkit` script (or the demo) many times over, where each process spends most of its time
starting up. Only for commands whose order does not matter (reads, refusals, runs on
homes of their own)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def run_at_once(argvs: Sequence[Sequence[str]], *, env: dict[str, str], cwd: Path,
                timeout: float = 60, merge_stderr: bool = False
                ) -> list[subprocess.CompletedProcess[str]]:
    """Start every argv, then wait for all (each within `timeout` seconds); what each
    printed, in the order given. With `merge_stderr` stderr goes into stdout."""
    procs = [subprocess.Popen(list(argv), cwd=cwd, env=env, text=True, encoding="utf-8",
                              errors="replace", stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
             for argv in argvs]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:  # a timeout (or any error) leaves nothing running
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err or "")
            for proc, (out, err) in zip(procs, outputs, strict=True)]
