"""``semsplat-batch``: pseudo labels → training → evaluation → prediction of many scenes on a Dask cluster.

Each scene is one Dask task (:func:`semsplat_ns.batch.scene_job.run_scene`) that runs the project's own
commands as subprocesses of the worker, so a crashing stage ends its process, not the worker, and its
one-line error (:mod:`semsplat_ns.errors`) is kept. Everything of a scene lands in ``<output_dir>/<scene>/``::

    result.json        the scene's record, written atomically as the task's last act: only a complete scene
                       has one, and a re-run skips the scenes that have it; metrics, each stage's command,
                       start time and wall time, the worker, host and GPU (index and name) it ran on
    attempts.json      every run of the task: worker, process, stage reached, the stages it completed,
                       outcome (kept across runs; a run after a lost worker keeps what that one completed)
    logs/<stage>.log   the command line and the output of each stage
    train/             ns-train's output (<scene>/<method>/batch/config.yml and the checkpoint)
    eval/              semsplat-eval's metrics.json and pictures
    predict/           semsplat-predict's class ids, colours and confidence of every view

The pseudo labels are the one output outside it: ``semsplat-pseudo-labels`` writes them into the scene
(``SCENE/train/pseudo``), where training reads them. ``<output_dir>/summary.{json,md,png}`` hold the
Table-II-shaped summary (:mod:`semsplat_ns.batch.summary`).

Modules: :mod:`~semsplat_ns.batch.cluster` (local or remote Dask cluster), :mod:`~semsplat_ns.batch.presets`
(is the ns-train method registered), :mod:`~semsplat_ns.batch.scene_job` (the per-scene task: what runs),
:mod:`~semsplat_ns.batch.process` (how one stage's command runs, dies with its worker and says why it failed),
:mod:`~semsplat_ns.batch.records` (result.json, attempts.json, what a new run deletes or keeps),
:mod:`~semsplat_ns.batch.runner` (submission, retries, live progress), :mod:`~semsplat_ns.batch.summary`.
Nothing here imports torch or nerfstudio: the client and the workers stay light, the stages import them.
"""
