"""One worker of a shared grid search (run as a process by test_concurrency.py).

argv: storage journal, log file, fail_stale (0/1). Its objective logs "start"/"end" lines with the
point and its pid (O_APPEND lines: whole under concurrent writers), sleeps as a training would,
and returns a value computed from the point.
"""

import json
import os
import sys
import time

from mt5study.studies import search

SPACE = {"global_batch": [8, 16, 32], "lr": [1e-3, 3e-3, 1e-2]}


def main(storage: str, log: str, fail_stale: str) -> None:
    study = search.make_study("faults", storage, SPACE, sampler="grid", pruner="none",
                              fail_stale_running=fail_stale == "1")

    def objective(params, report):
        def line(event):
            with open(log, "a") as f:
                f.write(json.dumps({"event": event, "pid": os.getpid(), **params}) + "\n")
        line("start")
        time.sleep(1.0)  # a trial's training
        value = params["global_batch"] * params["lr"]
        report(value, 1)
        line("end")
        return value

    search.run_search(study, objective)


if __name__ == "__main__":
    main(*sys.argv[1:])
