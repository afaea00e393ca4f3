"""Every size bound and timeout of dad-sandbox in one place, each with the reason for its value.

Why one module: the bounds are what keep one hostile run from stalling, crashing or bloating the
supervisor (DESIGN.md, trust boundary rule 2). Spread over the modules that use them, nobody could
see them together, compare them (a line cap must stay below its file cap), or tune them. This
module imports nothing, so every layer - the in-container runner too - may use it; the modules
that apply a value import it under the name they always used.
"""

from __future__ import annotations

# ---------------------------------------------------------------- timeouts (seconds)

#: One engine API call (not a stream): long enough for a loaded dockerd, short enough that a hung engine
#: surfaces as EngineUnavailable instead of freezing the supervisor. (_docker)
ENGINE_CALL_TIMEOUT = 30.0

#: Attaching to a container's output before start; start waits for it so no output is lost, and a
#: dockerd that never confirms must not hold the run forever. (_output)
OUTPUT_ATTACH_TIMEOUT = 30.0

#: After exit, how long the output pump may take to deliver what the engine still buffers; a
#: stream the engine never ends must not keep the run from being finalized. (_container_run)
OUTPUT_DRAIN_TIMEOUT = 10.0

#: Budget of the host's work on one finished run's files (collection, walks, hand-back); it runs in
#: a worker thread, so it never holds up another run's deadline on the event loop. (_container_run)
FILES_BUDGET_SECONDS = 30.0

#: After the engine vanished mid-run, how long to wait for it to come back to read and remove. (_container_run)
ENGINE_RETURN_TIMEOUT = 30.0

#: Wall-clock budget of one collection; past it the rest of the file is cut. (_collect)
COLLECT_BUDGET_SECONDS = 20.0

#: Staging one run's outcome files into the outcome repository; a run dir built to be slow to walk
#: must not hold up finalization. (_outcome)
OUTCOME_STAGE_BUDGET_SECONDS = 20.0

#: seconds a hand-back may take before it stops and reports itself incomplete (_handback)
HAND_BACK_SECONDS = 30.0

#: A writer holds the lock for one read and one write; waiting longer than this means something is wrong. (_metadata)
STATUS_LOCK_TIMEOUT = 10.0

#: The in-container deadline trails the supervisor's, so a living supervisor kills first and
#: classifies the run; dad-init is the backstop when none is left. (_spec)
INIT_DEADLINE_GRACE = 2.0

#: Seconds after the in-container ``timeout -k 1`` should have killed everything before the host gives up reading. (_session)
SESSION_HOST_BACKSTOP_SECONDS = 5.0

#: How long ``close`` waits for the waiter to exit before it kills the container (status ``cancelled``). (_session)
SESSION_STOP_TIMEOUT = 15.0

#: Seconds to wait for the supervisor to report the container running. (_session)
SESSION_START_TIMEOUT = 120.0

#: How long a stop request's answer may take to go out before the process exits anyway. (_session_server)
SESSION_REPLY_GRACE = 5.0

#: How long an idle slot may wait for a run; its container's stored deadline allows this plus the run. (_pool)
POOL_MAX_IDLE_SECONDS = 3600.0

#: How long `serve` waits for its warm pool to fill before it listens (it serves cold runs after). (_resident_server)
POOL_READY_WAIT = 60.0

#: A client must send its request head within this; a slow-loris connection cannot pin a slot. (_egress_proxy)
EGRESS_HEAD_TIMEOUT = 10.0

#: Connecting to an allowed upstream host. (_egress_proxy)
EGRESS_CONNECT_TIMEOUT = 10.0

# ---------------------------------------------------------------- sizes and counts

#: One line of container output kept in logs.jsonl; longer lines are cut (an endless line is bounded). (_output)
OUTPUT_MAX_LINE_BYTES = 64 << 10

#: Last bytes of output kept in memory for error messages (RunResult.error). (_output)
OUTPUT_TAIL_BYTES = 8 << 10

#: Bytes of the runner's trace.jsonl read; the rest is cut and counted. (_collect)
MAX_TRACE_BYTES = 32 << 20

#: One span line; longer lines are skipped without being held in memory. (_collect)
TRACE_MAX_LINE_BYTES = 256 << 10

#: Spans kept per run. (_collect)
TRACE_MAX_RECORDS = 100_000

#: The runner's report (node outputs included). (_collect)
MAX_REPORT_BYTES = 4 << 20

#: dad_metadata.json read back; host-written, but a run could plant a huge one in an old layout. (_metadata)
MAX_METADATA_BYTES = 4 << 20

#: An error message in metadata; an agent printing megabytes of traceback cannot bloat it. (_metadata)
MAX_ERROR_CHARS = 64_000

#: One request to `serve` over its socket. (_resident_server)
MAX_REQUEST_BYTES = 1 << 20

#: static_inputs.json read; written by the host, but read again in the container and on re-runs. (_static_inputs)
MAX_STATIC_INPUTS_BYTES = 16 << 20

#: Bytes of a run's JSONL file the readers (CLI, events) look at. (_jsonl)
MAX_JSONL_BYTES = 256 << 20

#: One JSONL line those readers parse; longer ones are skipped unread. (_jsonl)
JSONL_MAX_LINE_BYTES = 1 << 20

#: Live events queued for a handle's reader; the run never waits for a slow reader. (_events)
EVENTS_MAX_EVENTS = 4096

#: Bytes of queued live events (the policy's default output cap). (_events)
EVENTS_MAX_BYTES = 8 << 20

#: Characters of one string value kept in a validated record. (_hostile)
MAX_STRING_CHARS = 64 << 10

# ---------------------------------------------------------------- copy mode (engines that do not see the host's files)

#: The project is copied whole into every copy-mode run; past this it is refused with a clear
#: message (bind it through an engine that sees it instead). (_remote_rundir)
COPY_MAX_PROJECT_BYTES = 512 << 20

#: A re-run's previous run dir is copied in too; it holds what a run wrote, so it is bounded as
#: well (a bind-mode run may leave a sparse file far larger than the disk blocks its quota counted). (_remote_rundir)
COPY_MAX_PREVIOUS_RUN_BYTES = 1 << 30

#: Copy-out bytes when the policy's disk quota says "unlimited": the host still never takes more. (_remote_rundir)
COPY_UNLIMITED_BYTES = 16 << 30

#: Copy-out entries when the policy's max_files says "unlimited". (_remote_rundir)
COPY_UNLIMITED_ENTRIES = 1_000_000

#: Wall-clock budget of one copy-out; a stalled or dripping engine cannot hold finalization. (_remote_rundir)
COPY_OUT_BUDGET_SECONDS = 120.0

# ---------------------------------------------------------------- Swarm engine and the resident server

#: How often the Swarm engine's one poller reads all watched tasks and the nodes (two calls per
#: round): node loss is noticed within about a heartbeat plus this. (_swarm)
SWARM_POLL_INTERVAL = 0.25

#: How long the Swarm engine's kill waits for the task to leave ``running``. (_swarm)
SWARM_KILL_SETTLE_SECONDS = 15.0

#: Idle time after which an auto-started ``serve`` ends, as build servers do, so nothing lingers;
#: ``DAD_SANDBOX_SERVER_IDLE`` overrides it. (_resident_client)
SERVER_AUTO_IDLE_SECONDS = 600.0

