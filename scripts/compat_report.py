"""Render the engine compatibility table of README.md from test results, between its markers.

Each cell is the outcome of named integration tests run against that engine (JUnit XML written by
pytest, ``build/compat/<engine>*.xml``): ``make test-podman`` writes ``podman.xml``; ``make
test-compat-docker`` runs the same files on Docker into ``docker.xml`` (the gVisor column is read
from the ``[runsc]`` variants and the gVisor tests in that file).

    python scripts/compat_report.py        (or: make compat-doc)

A cell says how many of its tests passed, and names those that failed or were skipped; "not run"
when the results hold none of them. Nothing in the table is asserted by hand.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET  # our own pytest output, not hostile input
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- compat:begin -->", "<!-- compat:end -->"

IE = "test_isolated_execution"
SUP = "test_supervisor"
LC = "test_lifecycle"
POOL = "test_warm_pool"
SES = "test_sessions"
EG = "test_egress"
EC = "test_engine_compat"

#: feature -> tests on runc engines (Docker runc, Podman)
RUNC: dict[str, list[str]] = {
    "runs and statuses": [f"{IE}::test_command_completes_with_output_and_metadata", f"{IE}::test_nonzero_exit_is_failed",
                          f"{IE}::test_component_runs_in_its_container", f"{IE}::test_node_exception_fails_the_run",
                          f"{IE}::test_missing_image_is_an_engine_error", f"{IE}::test_cancellation_kills_and_removes"],
    "limits and isolation defaults": [f"{IE}::test_isolation_defaults", f"{IE}::test_deadline_kills_and_times_out",
                                      f"{EC}::test_run_has_no_network_but_loopback",
                                      f"{EC}::test_masked_run_root_is_empty_inside",
                                      f"{EC}::test_limits_and_seccomp_profile_reach_the_container"],
    "OOM status": [f"{IE}::test_out_of_memory_is_oom_killed", f"{IE}::test_child_oom_with_surviving_parent_is_oom_killed"],
    "gVisor": [],
    "deadline with no supervisor": [f"{LC}::test_deadline_holds_with_every_supervisor_gone[runc]"],
    "warm pool": [f"{POOL}::test_pooled_runs_use_each_container_once", f"{POOL}::test_pooled_run_deadline_and_failure",
                  f"{POOL}::test_pooled_run_cancel"],
    "recovery and gc": [f"{SUP}::test_killed_supervisor_twenty_times_nothing_leaks",
                        f"{SUP}::test_orphan_that_exited_is_finalized_from_its_state", f"{SUP}::test_gc_dry_run_then_clean",
                        f"{SUP}::test_live_supervisors_runs_are_not_touched", f"{POOL}::test_recovery_of_pool_containers",
                        f"{LC}::test_runs_that_never_got_a_container_end_abandoned"],
    "many runs": [f"{SUP}::test_fifty_concurrent_runs", f"{SUP}::test_cancel_queued_and_running", f"{SUP}::test_sync_supervisor"],
    "sessions": [f"{SES}::test_state_persists_across_execs_and_run_is_recorded",
                 f"{SES}::test_exec_timeout_kills_children_that_ignore_sigterm", f"{SES}::test_output_cap_and_file_limits",
                 f"{SES}::test_stream_delivers_output_while_it_runs", f"{SES}::test_session_deadline_ends_the_session",
                 f"{SES}::test_cancelled_task_cancels_the_session",
                 f"{SES}::test_orphaned_session_is_recovered_under_its_deadline", f"{SES}::test_sync_session",
                 f"{SES}::test_exec_runs_as_the_run_user_without_capabilities"],
    "egress allow-list": [f"{EG}::test_allowlisted_hosts_answer_and_everything_else_is_refused",
                          f"{EG}::test_connection_and_byte_limits_hold"],
}
#: feature -> tests of the gVisor column (Docker with runsc)
GVISOR: dict[str, list[str]] = {
    "gVisor": [f"{EC}::test_gvisor_policy_runs_under_gvisor", f"{LC}::test_deadline_holds_with_every_supervisor_gone[runsc]"],
    "deadline with no supervisor": [f"{LC}::test_deadline_holds_with_every_supervisor_gone[runsc]"],
    "egress allow-list": [f"{EG}::test_allowlist_works_under_gvisor", f"{EG}::test_forwarder_and_proxy_work_inside_gvisor"],
}
CM = "test_copy_mode"
CMA = "test_copy_mode_attack"
#: feature -> tests of the remote column: copy mode on a second dockerd with its own filesystem
#: (tests/remote); what copy mode refuses (warm pool, sessions, egress) has no test and shows "—"
REMOTE: dict[str, list[str]] = {
    "runs and statuses": [f"{CM}::test_a_run_comes_back_with_its_files", f"{CM}::test_a_failing_run_is_failed",
                          f"{CM}::test_a_timeout_is_timed_out_and_keeps_its_files",
                          f"{CM}::test_outcome_commit_and_rerun"],
    "limits and isolation defaults": [f"{CM}::test_over_the_disk_quota_fails_while_copying_back",
                                      f"{CM}::test_masks_hold_in_copy_mode",
                                      f"{CM}::test_a_hostile_run_plants_nothing_for_the_host"],
    "recovery and gc": [f"{CM}::test_recovery_finalizes_a_copy_mode_run_and_removes_its_volumes",
                        f"{CM}::test_gc_removes_volumes_and_loaders_a_dead_supervisor_left",
                        f"{CMA}::test_a_supervisor_killed_during_the_copy_out_is_recovered_without_false_tampering"],
}
#: column title, results file stem, feature map
COLUMNS = [
    ("Docker, runc", "docker", RUNC),
    ("Docker, gVisor (runsc)", "docker", GVISOR),
    ("Podman 4.3 rootful (Docker API)", "podman", {**RUNC, "gVisor": [f"{EC}::test_gvisor_policy_runs_under_gvisor"]}),
    ("remote engine (copy mode)", "remote", REMOTE),
]


def outcomes(path: Path) -> dict[str, str]:
    """``{"test_file::test_name[param]": "passed" | "failed" | "skipped"}`` from a JUnit XML file."""
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[key] = "failed"
        elif case.find("skipped") is not None:
            out[key] = "skipped"
        else:
            out[key] = "passed"
    return out


def cell(tests: list[str], results: dict[str, str] | None) -> str:
    if not tests:
        return "—"
    if results is None:
        return "not run"
    seen = {t: results[t] for t in tests if t in results}
    if not seen:
        return "not run"
    passed = sum(1 for v in seen.values() if v == "passed")
    text = f"{'yes' if passed == len(tests) else '**no**' if passed == 0 else 'partly'}: {passed}/{len(tests)}"
    bad = [f"`{t.split('::', 1)[1]}` {v}" for t, v in seen.items() if v != "passed"]
    bad += [f"`{t.split('::', 1)[1]}` not run" for t in tests if t not in seen]
    return text + (" (" + ", ".join(bad) + ")" if bad else "")


def main() -> int:
    results: dict[str, dict[str, str] | None] = {}
    for stem in ("docker", "podman", "remote"):  # docker.xml, docker-<more>.xml, ... merged (later files win)
        paths = sorted((ROOT / "build" / "compat").glob(f"{stem}*.xml"))
        results[stem] = {k: v for path in paths for k, v in outcomes(path).items()} if paths else None
    if all(r is None for r in results.values()):
        print("no results in build/compat/: run make test-podman (and the Docker subset)", file=sys.stderr)
        return 1
    header = "| feature | " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    lines = [header, "|---|" + "---|" * len(COLUMNS)]
    for feature in RUNC:
        cells = [cell(fmap.get(feature, []), results[stem]) for _, stem, fmap in COLUMNS]
        lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    text = README.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{BEGIN}\n{chr(10).join(lines)}\n{END}{tail}")
    print(f"wrote {len(RUNC)} features x {len(COLUMNS)} engines into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
