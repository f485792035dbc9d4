"""What the tests share, importable from any test file as `helpers.<module>` (pyproject puts tests/ on the path):

    helpers.runs       example paths, an in-process scorch-train, the run's events as dicts, waiting
    helpers.telemetry  FakeRun: a run folder, its event log and a real Publisher, with no training behind
    helpers.tui        a scripted run's events, ScriptedSource, waiting on the dashboard
    helpers.faults     real scorch-train processes for the fault drill

Fixtures stay in the conftest.py files; these are plain modules, so that any subset of test files runs
alone or together (two conftest modules shadowed each other's helpers before).
"""
