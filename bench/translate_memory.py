"""Peak memory of `seqtool translate` streaming N lines from stdin, for several N, plus a check that
output comes back in input order.

    python bench/translate_memory.py runs/quickstart --lines 10000,100000

Input is generated number-to-words sources (the quickstart task), so the order check is exact:
line i of the output must be the words for line i of the input (for a model that learnt the task).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.data.synthetic import number_to_words  # noqa: E402


def translate(run: str, numbers: list[int], beam: int) -> dict:
    with tempfile.TemporaryFile("w+") as src, tempfile.TemporaryFile("w+") as out:
        src.write("".join(" ".join(str(n)) + "\n" for n in numbers))
        src.seek(0)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "seqtool", "translate", "-c", run, "--beam", str(beam)],
                                stdin=src, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        lines = out.read().splitlines()
    correct = sum(line == number_to_words(n) for line, n in zip(lines, numbers))
    return {"lines": len(numbers), "output_lines": len(lines), "exit": os.waitstatus_to_exitcode(status),
            "peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds, "lines_per_s": len(numbers) / seconds,
            "in_order_and_correct": correct / max(len(numbers), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--lines", default="10000,100000")
    parser.add_argument("--beam", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    rows = []
    for count in map(int, args.lines.split(",")):
        numbers = [rng.randrange(10 ** rng.randint(1, 6)) for _ in range(count)]
        rows.append(translate(args.run, numbers, args.beam))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"run": args.run, "beam": args.beam, "rows": rows}))


if __name__ == "__main__":
    main()
