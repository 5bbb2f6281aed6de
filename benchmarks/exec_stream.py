"""How often a sandbox command's output arrives with the engine's upgrade headers, i.e. sits in
the HTTP client's read-ahead buffer rather than on the socket (what the exec reader lost before
it fed the read-ahead first). N threads, each with its own sandbox of a demo task, run a fast
``echo`` M times; every output must come back whole.

    .venv/bin/python benchmarks/exec_stream.py [--threads 6] [--commands 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swe_srl.sandbox import SandboxConfig, exec_stream, open_sandbox  # noqa: E402
from swe_srl.sandbox.images.source import ensure_image  # noqa: E402
from swe_srl.tasks import load_tasks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--commands", type=int, default=60)
    args = parser.parse_args()
    image = ensure_image(load_tasks("demo")[0])
    counts = {"execs": 0, "read_ahead": 0, "commands": 0, "wrong_output": 0}  # execs: start scripts too
    lock = threading.Lock()
    read_ahead = exec_stream._read_ahead

    def counted(sock, raw):  # the production reader, counted
        data = read_ahead(sock, raw)
        with lock:
            counts["execs"] += 1
            counts["read_ahead"] += bool(data)
        return data

    exec_stream._read_ahead = counted

    def worker() -> None:
        with open_sandbox(SandboxConfig(image=image)) as box:
            for _ in range(args.commands):
                wrong = box.exec("echo BASE=x").output.strip() != "BASE=x"
                with lock:
                    counts["commands"] += 1
                    counts["wrong_output"] += wrong

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
