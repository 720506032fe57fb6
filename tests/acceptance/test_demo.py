"""`syncer demo` (the README's first command) runs end to end on a bare machine."""

from __future__ import annotations

from tests.acceptance.test_cli import syncer


def test_demo_runs_the_whole_pipeline() -> None:
    done = syncer("demo", "--images-per-partition", "60", timeout=180)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "first full sync" in out
    # the scripted changes of the demo, as a feed consumer sees them
    for kind in ("created", "status_chan", "updated", "deleted"):
        assert kind in out, kind
    assert "cn-north-4/private 60" in out  # +1 upload, -1 deleted


def test_demo_on_a_machine_without_postgresql() -> None:
    """System binaries hidden: the embedded database comes from the pgserver wheel."""
    done = syncer(
        "demo",
        "--images-per-partition",
        "20",
        env={"SYNCER_PG_BINARIES": "pgserver", "PATH": "/usr/bin:/bin"},
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "(pgserver binaries:" in done.stdout
    assert "deleted" in done.stdout
