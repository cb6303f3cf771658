"""GPU box: run benchmark trainings in phases, detached from the device call that started them.

A device call may last 10 minutes, a machine stays ours for 30; so ``launch.sh`` starts this runner in
its own process session and later calls only watch it (``poll.sh``). Everything lives under
``--work`` (``/tmp/work``), outside the repo copy that each call re-syncs.

Phase files ``<work>/plan/phase<N>.txt`` are read when phase N starts, so a later call can still
write or change them. First line ``concurrency P [eval-as-done]``, then one job per line::

    semsplat SCENE METHOD STEPS RESULTS_NAME      # e.g. semsplat townA semsplat 30000 semsplat.json
    nerfw SCENE STEPS RESULTS_NAME                 # nerfstudio's semantic-nerfw

A phase trains its jobs, at most P at a time; then it evaluates the semsplat runs one after another on
an otherwise idle GPU, so every semsplat row's test time is uncontended (semantic-nerfw evaluates
inside its own job). With ``eval-as-done`` each semsplat run is evaluated as soon as its training
ends, while others still train (rows come sooner; their ``test_ms_shared_gpu`` is true). Rows go to
``<work>/results/RESULTS_NAME``; ``<work>/status.txt`` says where the runner is. The runner ends when the next
phase file does not exist.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from semsplat_ns.atomic import atomic_open

STEP_LINE = re.compile(r"^\s*(\d+) \((\d+\.\d+)%\)\s+(\S+ ?\S*)")


def last_progress(log: Path) -> str:
    """The last nerfstudio progress line of a training log ('12000 (40.00%) 14.2 ms'), or ''."""
    if not log.exists():
        return ""
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 20000))
        tail = handle.read().decode("utf-8", "replace")
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line) for line in tail.splitlines()]
    hits = [STEP_LINE.match(line) for line in lines]
    hits = [hit for hit in hits if hit]
    return f"{hits[-1].group(1)} ({hits[-1].group(2)}%) {hits[-1].group(3)}" if hits else ""


class Job:
    def __init__(self, words: List[str], work: Path, phase: int, jobs_sharing_gpu: int):
        self.kind = words[0]
        self.work = work
        if self.kind == "semsplat":
            self.scene, self.method, self.steps, self.results = words[1], words[2], int(words[3]), words[4]
        elif self.kind == "nerfw":
            self.scene, self.method, self.steps, self.results = words[1], "semantic-nerfw", int(words[2]), words[3]
        else:
            raise ValueError(f"unknown job kind {self.kind!r} in phase {phase}")
        self.name = f"p{phase}_{self.scene}_{self.method}_{self.steps}"
        self.log = work / "logs" / f"{self.name}.log"
        self.state = work / "state" / f"{self.name}.json"
        self.jobs_sharing_gpu = jobs_sharing_gpu
        self.process: Optional[subprocess.Popen] = None
        self.started = self.ended = None

    def train_command(self) -> List[str]:
        scene = str(self.work / "repo" / ".scenes" / self.scene)
        out = str(self.work / "results" / self.results)
        shared = [
            "--steps",
            str(self.steps),
            "--output-dir",
            str(self.work / "outputs"),
            "--jobs-sharing-gpu",
            str(self.jobs_sharing_gpu),
        ]
        if self.kind == "nerfw":
            return [sys.executable, "benchmarks/baselines/semantic_nerfw.py", "--scene", scene, "--out", out, *shared]
        return [
            sys.executable,
            "benchmarks/bench_semsplat.py",
            "--scene",
            scene,
            "--method",
            self.method,
            "--stage",
            "train",
            "--state",
            str(self.state),
            *shared,
        ]

    def eval_command(self) -> List[str]:
        return [
            sys.executable,
            "benchmarks/bench_semsplat.py",
            "--scene",
            self.scene,
            "--method",
            self.method,
            "--stage",
            "eval",
            "--state",
            str(self.state),
            "--out",
            str(self.work / "results" / self.results),
        ]


def read_phase(path: Path, work: Path, phase: int) -> tuple:
    lines = [line.split("#")[0].split() for line in path.read_text().splitlines()]
    lines = [words for words in lines if words]
    if not lines or lines[0][0] != "concurrency":
        raise ValueError(f"{path}: the first line must be 'concurrency P'")
    concurrency = int(lines[0][1])
    eval_as_done = "eval-as-done" in lines[0][2:]
    jobs_sharing = min(concurrency, len(lines) - 1)
    return concurrency, eval_as_done, [Job(words, work, phase, jobs_sharing) for words in lines[1:]]


def write_status(work: Path, text: str) -> None:
    with atomic_open(work / "status.txt", "w") as handle:
        handle.write(text)


def evaluate(job: Job, phase: int, history: List[str], shared_gpu: bool) -> None:
    """Evaluates a finished semsplat training (semantic-nerfw evaluates inside its own job)."""
    if job.kind != "semsplat" or not job.state.exists():
        return
    write_status(job.work, "\n".join(history + [f"phase {phase} evaluating {job.name}"]) + "\n")
    env = dict(os.environ, SEMSPLAT_TEST_SHARED_GPU="1" if shared_gpu else "0")
    with open(job.log, "a") as log:
        done = subprocess.run(
            job.eval_command(),
            cwd=job.work / "repo",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    history.append(f"phase {phase} eval {job.name}: rc {done.returncode}")


def run(work: Path) -> None:
    repo = work / "repo"
    for sub in ("logs", "state", "results", "outputs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    history: List[str] = []
    phase = 1
    while (work / "plan" / f"phase{phase}.txt").exists():
        concurrency, eval_as_done, jobs = read_phase(work / "plan" / f"phase{phase}.txt", work, phase)
        waiting, running = list(jobs), []
        while waiting or running:
            while waiting and len(running) < concurrency:
                job = waiting.pop(0)
                job.started = time.time()
                job.process = subprocess.Popen(
                    job.train_command(),
                    cwd=repo,
                    stdout=open(job.log, "w"),
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                running.append(job)
            for job in list(running):
                if job.process.poll() is not None:
                    job.ended = time.time()
                    history.append(
                        f"phase {phase} train {job.name}: rc {job.process.returncode}, {job.ended - job.started:.0f} s"
                    )
                    running.remove(job)
                    if eval_as_done:
                        evaluate(job, phase, history, shared_gpu=bool(running or waiting))
            lines = [f"{time.strftime('%H:%M:%S')} phase {phase} training ({concurrency} at a time)"]
            lines += [f"  {job.name}: {last_progress(job.log)} ({time.time() - job.started:.0f} s)" for job in running]
            lines += [f"  {job.name}: waiting" for job in waiting]
            write_status(work, "\n".join(history + lines) + "\n")
            time.sleep(5)
        if not eval_as_done:
            for job in jobs:
                evaluate(job, phase, history, shared_gpu=False)
        phase += 1
    write_status(work, "\n".join(history + ["runner done"]) + "\n")
    (work / "done").write_text("done\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/work"))
    run(parser.parse_args().work)


if __name__ == "__main__":
    main()
