"""DuckDB tables and views of the materializer, applied as numbered migrations recorded in
``schema_version``. Every table is keyed by a deterministic id (see ``schemas.ids``), so a
redelivered or replayed record upserts the row it already made.

Quoting: ``"at"``, ``"offset"``, ``"partition"`` and ``"timestamp"`` are SQL keywords; quote them
(``SELECT "at" FROM dead_letters``) or qualify them (``d.at``).

Reading side: join ``tool_calls``, ``usage``, ``hook_events`` on ``session_id``; ``workflow_runs``
on ``run_id``; ``v_session_summary`` and ``v_daily_usage`` are ready-made rollups.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from outloop.schemas.registry import OUTPUTS, Output, Registry
from outloop.sinks.context import DDL as CONTEXT_DDL
from outloop.sinks.context import MARK_ALL as CONTEXT_MARK_ALL
from outloop.sinks.discovery import DDL as DISCOVERY_DDL
from outloop.sinks.overhead import DDL as OVERHEAD_DDL

TABLES = """
CREATE TABLE consumer_offsets (
    topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,    -- the next offset to read; written with the rows it covers
    anchor VARCHAR,                 -- '<offset>:<digest>' of the record at the log's first offset
    PRIMARY KEY (topic, "partition"));
CREATE TABLE hook_events (
    id VARCHAR PRIMARY KEY, session_id VARCHAR, hook_event_name VARCHAR, tool_name VARCHAR,
    tool_use_id VARCHAR, received_at TIMESTAMPTZ, source VARCHAR,
    payload JSON,                   -- the hook payload exactly as received
    digest VARCHAR NOT NULL);       -- tie-break between two versions of one id: the smaller wins
CREATE TABLE tool_calls (
    id VARCHAR PRIMARY KEY,         -- tool_use_id, else 'syn:<call_key>'
    tool_use_id VARCHAR, call_key VARCHAR, session_id VARCHAR NOT NULL, tool_name VARCHAR,
    command VARCHAR, file_path VARCHAR, status VARCHAR NOT NULL,
    started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, duration_ms DOUBLE,
    input_bytes BIGINT, output_bytes BIGINT, output_tokens_est BIGINT,
    source VARCHAR NOT NULL,        -- '+'-joined sources that saw the call (hook, transcript, ...)
    tool_input JSON);               -- canonical (key-sorted) JSON
CREATE TABLE usage (
    id VARCHAR PRIMARY KEY,         -- 'message.id:requestId'
    session_id VARCHAR NOT NULL, model VARCHAR, "timestamp" TIMESTAMPTZ,
    input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
    cache_read_input_tokens BIGINT NOT NULL, cache_creation_input_tokens BIGINT NOT NULL,
    cache_creation_5m_tokens BIGINT, cache_creation_1h_tokens BIGINT,
    cost_usd DOUBLE, source VARCHAR, digest VARCHAR NOT NULL);
CREATE TABLE workflow_events (
    id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, type VARCHAR NOT NULL, "at" TIMESTAMPTZ,
    source VARCHAR, data JSON, digest VARCHAR NOT NULL);
CREATE TABLE workflow_runs (
    run_id VARCHAR PRIMARY KEY, workflow VARCHAR, session_id VARCHAR,
    status VARCHAR NOT NULL,        -- running | succeeded | failed | cancelled
    started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, phase VARCHAR, phase_seq INTEGER,
    input_tokens BIGINT, output_tokens BIGINT, cache_read_input_tokens BIGINT,
    cache_creation_input_tokens BIGINT, cost_usd DOUBLE, events INTEGER NOT NULL);
CREATE TABLE dead_letters (
    id VARCHAR PRIMARY KEY,         -- 'dl:' + digest of the record's key and bytes
    topic VARCHAR, "partition" INTEGER, "offset" BIGINT, key VARCHAR,
    reason VARCHAR NOT NULL, detail VARCHAR, raw BLOB, "at" TIMESTAMPTZ NOT NULL);
CREATE TABLE flush_markers (
    marker VARCHAR NOT NULL, topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (marker, topic, "partition"));
"""

VIEWS = """
CREATE OR REPLACE VIEW v_session_summary AS
WITH calls AS (
    SELECT session_id, count(*) AS tool_calls,
           count(*) FILTER (WHERE status = 'error') AS tool_errors,
           count(*) FILTER (WHERE status = 'started') AS tool_calls_open,
           coalesce(sum(output_bytes), 0) AS tool_output_bytes,
           coalesce(sum(output_tokens_est), 0) AS tool_output_tokens_est,
           min(started_at) AS first_call_at, max(coalesce(ended_at, started_at)) AS last_call_at
    FROM tool_calls GROUP BY session_id),
spend AS (
    SELECT session_id, count(*) AS api_responses,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           sum(cache_read_input_tokens) AS cache_read_tokens,
           sum(cache_creation_input_tokens) AS cache_creation_tokens,
           sum(input_tokens + output_tokens + cache_read_input_tokens + cache_creation_input_tokens)
               AS total_tokens,
           sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_responses,
           min("timestamp") AS first_usage_at, max("timestamp") AS last_usage_at
    FROM usage GROUP BY session_id)
SELECT coalesce(c.session_id, s.session_id) AS session_id,
       coalesce(c.tool_calls, 0) AS tool_calls, coalesce(c.tool_errors, 0) AS tool_errors,
       coalesce(c.tool_calls_open, 0) AS tool_calls_open,
       coalesce(c.tool_output_bytes, 0) AS tool_output_bytes,
       coalesce(c.tool_output_tokens_est, 0) AS tool_output_tokens_est,
       coalesce(s.api_responses, 0) AS api_responses,
       coalesce(s.input_tokens, 0) AS input_tokens, coalesce(s.output_tokens, 0) AS output_tokens,
       coalesce(s.cache_read_tokens, 0) AS cache_read_tokens,
       coalesce(s.cache_creation_tokens, 0) AS cache_creation_tokens,
       coalesce(s.total_tokens, 0) AS total_tokens, s.cost_usd,
       coalesce(s.unpriced_responses, 0) AS unpriced_responses,
       least(c.first_call_at, s.first_usage_at) AS first_seen_at,
       greatest(c.last_call_at, s.last_usage_at) AS last_seen_at
FROM calls c FULL OUTER JOIN spend s ON c.session_id = s.session_id;

CREATE OR REPLACE VIEW v_daily_usage AS
SELECT CAST(timezone('UTC', "timestamp") AS DATE) AS day, model, count(*) AS api_responses,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cache_read_input_tokens) AS cache_read_tokens,
       sum(cache_creation_input_tokens) AS cache_creation_tokens, sum(cost_usd) AS cost_usd
FROM usage GROUP BY ALL;

CREATE OR REPLACE VIEW v_tool_commands AS
SELECT session_id, tool_name, coalesce(command, file_path) AS target, count(*) AS calls,
       count(*) FILTER (WHERE status = 'error') AS errors,
       coalesce(sum(output_tokens_est), 0) AS output_tokens_est, median(duration_ms) AS median_ms
FROM tool_calls GROUP BY ALL;
"""

PATTERNS = """
ALTER TABLE tool_calls ADD COLUMN signature VARCHAR;
ALTER TABLE tool_calls ADD COLUMN category VARCHAR;
ALTER TABLE tool_calls ADD COLUMN side_effect VARCHAR;
ALTER TABLE tool_calls ADD COLUMN signature_version INTEGER;
CREATE TABLE pattern_occurrences (
    signature VARCHAR NOT NULL, tool_use_id VARCHAR NOT NULL,   -- tool_use_id = tool_calls.id
    session_id VARCHAR NOT NULL, ts TIMESTAMPTZ,                -- event time: started_at, else ended_at
    category VARCHAR NOT NULL, tool VARCHAR NOT NULL, target VARCHAR NOT NULL,
    side_effect VARCHAR NOT NULL, status VARCHAR NOT NULL,
    output_tokens BIGINT, duration_ms DOUBLE,
    sample VARCHAR,                                             -- the command (or path), secrets redacted
    signature_version INTEGER NOT NULL,
    PRIMARY KEY (signature, tool_use_id));
CREATE TABLE operation_patterns (
    signature VARCHAR PRIMARY KEY, category VARCHAR, tool VARCHAR, target VARCHAR, side_effect VARCHAR,
    occurrence_count BIGINT NOT NULL, session_count BIGINT NOT NULL,
    count_1h BIGINT, count_24h BIGINT, count_7d BIGINT, count_30d BIGINT,
    windows_as_of TIMESTAMPTZ,                                  -- the event-time watermark of the windows
    first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ,
    confidence_score INTEGER NOT NULL, status VARCHAR NOT NULL,
    tokens_total BIGINT, avg_output_tokens DOUBLE, success_rate DOUBLE,
    ok_count BIGINT, failed_count BIGINT, avg_duration_ms DOUBLE,
    samples JSON, confidence_breakdown JSON, signature_version INTEGER);
CREATE TABLE session_sequences (
    session_id VARCHAR NOT NULL, level VARCHAR NOT NULL, ngram VARCHAR NOT NULL, n INTEGER NOT NULL,
    occurrences BIGINT NOT NULL, first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ,
    PRIMARY KEY (session_id, level, ngram));
CREATE TABLE pattern_dirty (                                    -- what the next refresh must recompute
    kind VARCHAR NOT NULL, key VARCHAR NOT NULL, PRIMARY KEY (kind, key));
CREATE OR REPLACE VIEW sequence_patterns AS
SELECT level, ngram, n, count(DISTINCT session_id) AS session_count, sum(occurrences) AS occurrence_count,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM session_sequences GROUP BY level, ngram, n;
"""

INCREMENTAL_PATTERNS = """
CREATE TABLE pattern_occurrences_by_call (                      -- one occurrence per tool call
    signature VARCHAR NOT NULL, tool_use_id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, ts TIMESTAMPTZ,
    category VARCHAR NOT NULL, tool VARCHAR NOT NULL, target VARCHAR NOT NULL,
    side_effect VARCHAR NOT NULL, status VARCHAR NOT NULL,
    output_tokens BIGINT, duration_ms DOUBLE, sample VARCHAR, signature_version INTEGER NOT NULL);
INSERT INTO pattern_occurrences_by_call SELECT * FROM pattern_occurrences;
DROP TABLE pattern_occurrences;
ALTER TABLE pattern_occurrences_by_call RENAME TO pattern_occurrences;
CREATE TABLE pattern_state (                                    -- per signature, maintained from deltas
    signature VARCHAR PRIMARY KEY, category VARCHAR, tool VARCHAR, target VARCHAR,
    effect_rank INTEGER,                                        -- worst side effect, 1 read-only .. 5 destructive
    n BIGINT NOT NULL, sessions BIGINT NOT NULL DEFAULT 0,      -- occurrences; rows of pattern_sessions
    first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ,
    tokens_n BIGINT NOT NULL, tokens_sum HUGEINT NOT NULL, tokens_sq HUGEINT NOT NULL,
    tokens_min BIGINT, tokens_max BIGINT,
    duration_n BIGINT NOT NULL, duration_sum HUGEINT NOT NULL,  -- duration sums in whole microseconds
    duration_sq HUGEINT NOT NULL, duration_min DOUBLE, duration_max DOUBLE,
    ok BIGINT NOT NULL, failed BIGINT NOT NULL, version_min INTEGER);
CREATE TABLE pattern_sessions (
    signature VARCHAR NOT NULL, session_id VARCHAR NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (signature, session_id));
CREATE TABLE pattern_hours (                                    -- window buckets
    signature VARCHAR NOT NULL, hour TIMESTAMP NOT NULL,        -- the UTC hour of the occurrences
    n BIGINT NOT NULL, PRIMARY KEY (signature, hour));
CREATE TABLE pattern_samples (
    signature VARCHAR NOT NULL, sample VARCHAR NOT NULL, n BIGINT NOT NULL,
    first_at TIMESTAMPTZ NOT NULL,                              -- earliest occurrence; 9999-01-01 when none has a time
    PRIMARY KEY (signature, sample));
CREATE TABLE pattern_session_spans (                            -- occurrences with a time, per session
    session_id VARCHAR PRIMARY KEY, n BIGINT NOT NULL, first_ts TIMESTAMPTZ, last_ts TIMESTAMPTZ);
INSERT INTO pattern_sessions (signature, session_id, n)
SELECT signature, session_id, count(*) FROM pattern_occurrences GROUP BY ALL;
INSERT INTO pattern_state (signature, n, sessions, tokens_n, tokens_sum, tokens_sq, duration_n, duration_sum,
                           duration_sq, ok, failed, category, tool, target, effect_rank, first_seen, last_seen,
                           tokens_min, tokens_max, duration_min, duration_max, version_min)
SELECT o.signature, count(*), any_value(s.k), count(output_tokens), coalesce(sum(output_tokens::HUGEINT), 0),
       coalesce(sum(output_tokens::HUGEINT * output_tokens), 0), count(duration_ms),
       coalesce(sum(round(duration_ms * 1000)::HUGEINT), 0),
       coalesce(sum(round(duration_ms * 1000)::HUGEINT * round(duration_ms * 1000)::HUGEINT), 0),
       count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status IN ('error', 'interrupted')),
       min(category), min(tool), min(target),
       max(list_position(['read-only', 'writes files', 'network', 'unknown', 'destructive'], side_effect)),
       min(ts), max(ts), min(output_tokens), max(output_tokens), min(duration_ms), max(duration_ms),
       min(signature_version)
FROM pattern_occurrences o
JOIN (SELECT signature, count(*) AS k FROM pattern_sessions GROUP BY signature) s USING (signature)
GROUP BY o.signature;
INSERT INTO pattern_hours (signature, hour, n)
SELECT signature, date_trunc('hour', timezone('UTC', ts)), count(*) FROM pattern_occurrences
WHERE ts IS NOT NULL GROUP BY ALL;
INSERT INTO pattern_samples (signature, sample, n, first_at)
SELECT signature, sample, count(*), min(coalesce(ts, TIMESTAMPTZ '9999-01-01')) FROM pattern_occurrences
WHERE sample IS NOT NULL GROUP BY ALL;
INSERT INTO pattern_session_spans (session_id, n, first_ts, last_ts)
SELECT session_id, count(*), min(ts), max(ts) FROM pattern_occurrences WHERE ts IS NOT NULL GROUP BY ALL;
"""

TIE_ON_COLUMNS = """
ALTER TABLE usage DROP COLUMN digest;
ALTER TABLE hook_events DROP COLUMN digest;
ALTER TABLE workflow_events DROP COLUMN digest;
"""

ROUTING = """
CREATE TABLE routing_decisions (
    decision_id VARCHAR PRIMARY KEY,    -- 'rd:' + digest of session and tool_use_id
    tool_use_id VARCHAR, session_id VARCHAR NOT NULL, tool_name VARCHAR, command VARCHAR,
    signature VARCHAR, category VARCHAR, side_effect VARCHAR,
    rule VARCHAR, rule_version VARCHAR,
    kind VARCHAR,                       -- structured | generic
    family VARCHAR,                     -- the runner family
    mode VARCHAR NOT NULL,              -- shadow | advise | enforce
    action VARCHAR NOT NULL,            -- pass | rewrite | advise | deny
    answered BOOLEAN,                   -- whether the hook printed it (never in shadow)
    confidence INTEGER, latency_ms DOUBLE, reason VARCHAR, decided_at TIMESTAMPTZ,
    fidelity DOUBLE);                   -- measured later (share of used strings the compact result kept)
CREATE TABLE routing_rules (            -- the rules as the router loaded them; the latest version per name
    name VARCHAR PRIMARY KEY, version VARCHAR NOT NULL, family VARCHAR, kind VARCHAR, mode VARCHAR,
    signatures JSON, categories JSON, exclude JSON, threshold INTEGER, promote_at DOUBLE,
    min_decisions INTEGER, builtin BOOLEAN, source VARCHAR, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE adw_tools (                -- the deterministic tools (runner families) the rules route to
    name VARCHAR PRIMARY KEY, kind VARCHAR, entry VARCHAR, rules JSON, version VARCHAR,
    updated_at TIMESTAMPTZ NOT NULL);
"""

SAVINGS = """
ALTER TABLE routing_decisions ADD COLUMN fidelity_used INTEGER;
ALTER TABLE routing_decisions ADD COLUMN raw_tokens BIGINT;
ALTER TABLE routing_decisions ADD COLUMN compact_tokens BIGINT;
ALTER TABLE routing_decisions ADD COLUMN carry_calls INTEGER;
ALTER TABLE routing_decisions ADD COLUMN saved_once_tokens BIGINT;
ALTER TABLE routing_decisions ADD COLUMN net_tokens BIGINT;
ALTER TABLE routing_decisions ADD COLUMN net_usd DOUBLE;
ALTER TABLE routing_decisions ADD COLUMN context_tokens BIGINT;
ALTER TABLE routing_decisions ADD COLUMN model VARCHAR;
ALTER TABLE routing_decisions ADD COLUMN basis VARCHAR;
CREATE OR REPLACE VIEW cost_savings_log AS
SELECT decision_id, tool_use_id, session_id, CAST(decided_at AS DATE) AS day, rule, rule_version, kind, family,
       category, signature, mode, action, basis, model, raw_tokens, compact_tokens, carry_calls, saved_once_tokens,
       net_tokens, net_usd, context_tokens, fidelity, fidelity_used, decided_at
FROM routing_decisions WHERE net_tokens IS NOT NULL;
"""

# Migration 9: API messages (``transcript.message``), and orphan results - tool calls whose tool_use
# was never seen (``tool_name IS NULL``: only a tool_result, of a resumed or truncated session) - kept
# but left out of the tool-call counts and listed apart.
API_MESSAGES = """
CREATE TABLE api_messages (
    id VARCHAR PRIMARY KEY,         -- 'message.id:requestId', as usage.id
    message_id VARCHAR NOT NULL, request_id VARCHAR, session_id VARCHAR NOT NULL, model VARCHAR,
    "timestamp" TIMESTAMPTZ,        -- of the response's first record
    tool_use_ids JSON,              -- the tool_use ids it issued, in order (tool_calls.id)
    content_blocks BIGINT NOT NULL, text_bytes BIGINT NOT NULL, thinking_bytes BIGINT NOT NULL,
    tool_use_bytes BIGINT NOT NULL, agent_id VARCHAR, is_sidechain BOOLEAN, source VARCHAR);
CREATE OR REPLACE VIEW v_session_summary AS
WITH calls AS (
    SELECT session_id, count(*) FILTER (WHERE tool_name IS NOT NULL) AS tool_calls,
           count(*) FILTER (WHERE status = 'error' AND tool_name IS NOT NULL) AS tool_errors,
           count(*) FILTER (WHERE status = 'started' AND tool_name IS NOT NULL) AS tool_calls_open,
           count(*) FILTER (WHERE tool_name IS NULL) AS orphan_results,
           coalesce(sum(output_bytes), 0) AS tool_output_bytes,
           coalesce(sum(output_tokens_est), 0) AS tool_output_tokens_est,
           min(started_at) AS first_call_at, max(coalesce(ended_at, started_at)) AS last_call_at
    FROM tool_calls GROUP BY session_id),
spend AS (
    SELECT session_id, count(*) AS api_responses,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           sum(cache_read_input_tokens) AS cache_read_tokens,
           sum(cache_creation_input_tokens) AS cache_creation_tokens,
           sum(input_tokens + output_tokens + cache_read_input_tokens + cache_creation_input_tokens)
               AS total_tokens,
           sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_responses,
           min("timestamp") AS first_usage_at, max("timestamp") AS last_usage_at
    FROM usage GROUP BY session_id)
SELECT coalesce(c.session_id, s.session_id) AS session_id,
       coalesce(c.tool_calls, 0) AS tool_calls, coalesce(c.tool_errors, 0) AS tool_errors,
       coalesce(c.tool_calls_open, 0) AS tool_calls_open,
       coalesce(c.tool_output_bytes, 0) AS tool_output_bytes,
       coalesce(c.tool_output_tokens_est, 0) AS tool_output_tokens_est,
       coalesce(s.api_responses, 0) AS api_responses,
       coalesce(s.input_tokens, 0) AS input_tokens, coalesce(s.output_tokens, 0) AS output_tokens,
       coalesce(s.cache_read_tokens, 0) AS cache_read_tokens,
       coalesce(s.cache_creation_tokens, 0) AS cache_creation_tokens,
       coalesce(s.total_tokens, 0) AS total_tokens, s.cost_usd,
       coalesce(s.unpriced_responses, 0) AS unpriced_responses,
       least(c.first_call_at, s.first_usage_at) AS first_seen_at,
       greatest(c.last_call_at, s.last_usage_at) AS last_seen_at,
       coalesce(c.orphan_results, 0) AS orphan_results
FROM calls c FULL OUTER JOIN spend s ON c.session_id = s.session_id;
CREATE OR REPLACE VIEW v_tool_commands AS
SELECT session_id, tool_name, coalesce(command, file_path) AS target, count(*) AS calls,
       count(*) FILTER (WHERE status = 'error') AS errors,
       coalesce(sum(output_tokens_est), 0) AS output_tokens_est, median(duration_ms) AS median_ms
FROM tool_calls WHERE tool_name IS NOT NULL GROUP BY ALL;
CREATE OR REPLACE VIEW v_orphan_results AS
SELECT id AS tool_use_id, session_id, status, ended_at, output_bytes, output_tokens_est, source
FROM tool_calls WHERE tool_name IS NULL;
"""

QUOTA = """
CREATE TABLE quota_snapshots (
    id VARCHAR PRIMARY KEY,         -- '<window>:<at>'
    "at" TIMESTAMPTZ NOT NULL, "window" VARCHAR NOT NULL, start TIMESTAMPTZ, "end" TIMESTAMPTZ,
    input_tokens BIGINT, output_tokens BIGINT, cache_write_tokens BIGINT, cache_read_tokens BIGINT,
    total_tokens BIGINT, cost_usd DOUBLE, requests BIGINT, tokens_per_hour DOUBLE, recent_tokens_per_hour DOUBLE,
    limit_tokens BIGINT, percent DOUBLE, basis VARCHAR NOT NULL,     -- official | estimate | none
    official_percent DOUBLE, resets_at TIMESTAMPTZ);
CREATE TABLE quota_forecasts (
    id VARCHAR PRIMARY KEY,         -- '<window>:<at>'
    "at" TIMESTAMPTZ NOT NULL, "window" VARCHAR NOT NULL, start TIMESTAMPTZ, "end" TIMESTAMPTZ,
    used_tokens BIGINT, projected_tokens BIGINT, p10 BIGINT, p90 BIGINT, mean_tokens BIGINT,
    limit_tokens BIGINT, time_to_limit_s DOUBLE, p_exceed DOUBLE, basis VARCHAR NOT NULL, model JSON);
CREATE TABLE throttle_decisions (
    id VARCHAR PRIMARY KEY,         -- 'throttle:<at>:<window>:<level>'
    "at" TIMESTAMPTZ NOT NULL, level VARCHAR NOT NULL, action VARCHAR NOT NULL, "window" VARCHAR,
    percent DOUBLE, basis VARCHAR, abnormal BOOLEAN, reason VARCHAR);
CREATE TABLE budget_checks (
    id VARCHAR PRIMARY KEY,         -- 'budget:<n>', in the order the checks were answered
    workflow VARCHAR NOT NULL, run_id VARCHAR, asked_at TIMESTAMPTZ NOT NULL,
    decision VARCHAR NOT NULL,      -- allow | warn | deny
    reasons JSON, estimated_tokens BIGINT, estimate_basis VARCHAR, headroom_tokens BIGINT,
    reserved_tokens BIGINT NOT NULL,
    status VARCHAR NOT NULL,        -- reserved | released | expired | none
    expires_at TIMESTAMPTZ, ended_at TIMESTAMPTZ);
"""

SIDE_EFFECT_COUNTS = """
CREATE TABLE pattern_effects (                                  -- side-effect classes of a signature's commands
    signature VARCHAR NOT NULL, side_effect VARCHAR NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (signature, side_effect));
INSERT INTO pattern_effects (signature, side_effect, n)
SELECT signature, side_effect, count(*) FROM pattern_occurrences GROUP BY ALL;
ALTER TABLE operation_patterns ADD COLUMN side_effects JSON;     -- {class: occurrences}, safest class first
ALTER TABLE operation_patterns ADD COLUMN side_effect_share DOUBLE;  -- share of side_effect, the dominant class
INSERT INTO pattern_dirty SELECT 'signature', signature FROM pattern_state ON CONFLICT DO NOTHING;
"""

RUN_TIMES = """
ALTER TABLE tool_calls ADD COLUMN reported_ms DOUBLE;            -- the tool's own run time (transcript)
ALTER TABLE tool_calls ADD COLUMN hook_pre_at TIMESTAMPTZ;       -- PreToolUse receive time
ALTER TABLE tool_calls ADD COLUMN hook_post_at TIMESTAMPTZ;      -- PostToolUse receive time
ALTER TABLE tool_calls ADD COLUMN permission_asked BOOLEAN;      -- a permission dialog came between them
ALTER TABLE tool_calls ADD COLUMN run_ms DOUBLE;                 -- derived (projections.patterns): the run time
ALTER TABLE tool_calls ADD COLUMN duration_source VARCHAR;       -- derived: agents.toolcalls.DURATION_SOURCES
UPDATE tool_calls SET duration_source = 'transcript-wallclock'   -- what stored transcript calls hold
WHERE source LIKE '%transcript%' AND ended_at IS NOT NULL;
-- pattern durations are run times from now on: the wall-clock ones stored so far leave the averages
-- (a replay of the sources measures them again)
UPDATE pattern_occurrences SET duration_ms = NULL WHERE duration_ms IS NOT NULL;
UPDATE pattern_state SET duration_n = 0, duration_sum = 0, duration_sq = 0, duration_min = NULL, duration_max = NULL;
INSERT INTO pattern_dirty SELECT 'signature', signature FROM pattern_state ON CONFLICT DO NOTHING;
"""

# Migration 14: cost_savings_log becomes a table the sink writes from ``routing.saving`` events (shadow
# replay estimates and live measurements of enforced runs), one row per decision; the estimates stored
# so far in routing_decisions are copied in. A live decision's measured columns in routing_decisions are
# filled from it by the sink (sinks.upsert.FILL_MEASURED).
SAVINGS_LOG = """
DROP VIEW IF EXISTS cost_savings_log;
CREATE TABLE cost_savings_log (
    decision_id VARCHAR PRIMARY KEY,    -- the routing decision's id (routing_decisions.decision_id)
    tool_use_id VARCHAR, session_id VARCHAR NOT NULL,
    day DATE,                           -- UTC day of decided_at
    rule VARCHAR, rule_version VARCHAR, kind VARCHAR, family VARCHAR, category VARCHAR, signature VARCHAR,
    mode VARCHAR, action VARCHAR,
    basis VARCHAR NOT NULL,             -- measured (a live run: the runner's log) | estimate (shadow replay)
    model VARCHAR,
    raw_tokens BIGINT, compact_tokens BIGINT,
    carry_calls INTEGER,                -- API calls that re-read the output until the next compaction
    saved_once_tokens BIGINT,           -- raw - compact
    saved_carry_tokens BIGINT,          -- (raw - compact) x carry when nothing used was lost, else 0
    charged_tokens BIGINT,              -- what outloop added: the extra turn and the compact text carried
    net_tokens BIGINT, net_usd DOUBLE,  -- saved - charged (dollars: model-aware prices, cache rates)
    context_tokens BIGINT,              -- the context at the call that first saw the output
    fidelity DOUBLE, fidelity_used INTEGER,
    run_id VARCHAR,                     -- the runner's run ($OUTLOOP_HOME/runs/<run_id>.log) when measured
    decided_at TIMESTAMPTZ);
INSERT INTO cost_savings_log
SELECT decision_id, tool_use_id, session_id, CAST(timezone('UTC', decided_at) AS DATE), rule, rule_version, kind,
       family, category, signature, mode, action, coalesce(basis, 'estimate'), model, raw_tokens, compact_tokens,
       carry_calls, saved_once_tokens, CASE WHEN fidelity < 1 THEN 0 ELSE net_tokens END,
       CASE WHEN fidelity < 1 THEN -net_tokens ELSE 0 END, net_tokens, net_usd,
       context_tokens, fidelity, fidelity_used, NULL, decided_at
FROM routing_decisions WHERE net_tokens IS NOT NULL;
"""

# (version, description, SQL). Append only: a released migration never changes.
PROJECTION_VERSIONS = """
CREATE TABLE projection_versions (
    name VARCHAR PRIMARY KEY,       -- a projection's name (sinks.projection)
    version VARCHAR NOT NULL);      -- the version its derived rows were last rebuilt to
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "tables: offsets, hook events, tool calls, usage, workflows, dead letters, flush markers", TABLES),
    (2, "views: v_session_summary, v_daily_usage, v_tool_commands", VIEWS),
    (3, "patterns: signatures on tool_calls, occurrences, operation patterns, sequences", PATTERNS),
    (4, "incremental patterns: occurrences keyed by tool call; per-signature state, sessions, hourly buckets, "
        "samples, session spans (backfilled)", INCREMENTAL_PATTERNS),
    (5, "versions of a usage, hook or workflow row are told apart by their own columns: the record digest "
        "columns are dropped (stored rows keep the version they hold)", TIE_ON_COLUMNS),
    (6, "routing: the router's decisions, its rules and the tools they route to", ROUTING),
    (7, "savings: measured fidelity and the net saving of each routing decision; the cost_savings_log view",
     SAVINGS),
    (8, "quota: snapshots, forecasts and throttle decisions at the usage watermark; workflow budget checks",
     QUOTA),
    (9, "api_messages (one row per API response: tool_use ids, model, sizes); orphan results (a tool_result "
        "whose tool_use was never seen) out of the tool-call counts, listed in v_orphan_results", API_MESSAGES),
    (10, "side effects per command: pattern_effects counts each signature's classes; operation_patterns gains "
        "side_effects and side_effect_share, and side_effect becomes the dominant class (every pattern is "
        "refreshed)", SIDE_EFFECT_COUNTS),
    (11, "run times: tool_calls.run_ms and duration_source; duration_ms stays wall-clock (it may hold a wait "
        "for the user's permission) and leaves the pattern averages", RUN_TIMES),
    (12, "context efficiency: context_efficiency, context_outputs, file_reads, cache_breaks, context_profiles, "
        "v_context_workflows (every stored session marked for a refresh)", CONTEXT_DDL + CONTEXT_MARK_ALL),
    (13, "projections: projection_versions, the version each projection's derived rows were rebuilt to",
        PROJECTION_VERSIONS),
    (14, "cost_savings_log is a table (one row per decision, measured or estimated), written from routing.saving "
         "events; the stored estimates are copied in", SAVINGS_LOG),
    (15, "context_overhead: the fixed overhead split into memory files (measured where the project folder is at "
         "hand) and MCP tools called (every stored session marked for a refresh)", OVERHEAD_DDL),
    (17, "discovery: recommendations (ranked by ROI, stable ids), the occurrences behind their figures, "
         "recommendation_feedback (accept, reject, filed), v_recommendations", DISCOVERY_DDL),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


DDL_TYPES = {  # schemas.registry column types -> DuckDB
    "text": "VARCHAR", "json": "JSON", "int": "BIGINT", "int32": "INTEGER", "float": "DOUBLE", "bool": "BOOLEAN",
    "time": "TIMESTAMPTZ", "date": "DATE", "bytes": "BLOB"}


def create_table(output: Output) -> str:
    """The ``CREATE TABLE`` of an output, from its registry entry: :func:`ensure_outputs` runs it for an
    output whose table the file lacks (the tables of the outputs before the registry were created by the
    migrations above; a test checks they match their entries)."""
    columns = ", ".join(f'"{c.name}" {DDL_TYPES[c.type]}{"" if c.nullable else " NOT NULL"}'
                        for c in output.columns)
    return f'CREATE TABLE {output.table} ({columns}, PRIMARY KEY ("{output.key}"));'


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' AND schema_name = 'main'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, upto: int | None = None) -> int:
    """Apply the migrations the file lacks (up to version ``upto``, default all), each in its own
    transaction; returns the version."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
    have = current_version(con)
    if have > SCHEMA_VERSION:
        raise RuntimeError(f"database schema v{have} is newer than this outloop (v{SCHEMA_VERSION})")
    for version, description, sql in MIGRATIONS:
        if version <= have or (upto is not None and version > upto):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in duckdb.extract_statements(sql):
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                        [version, description, datetime.now(UTC)])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    if upto is None:
        ensure_outputs(con)
    return SCHEMA_VERSION if upto is None else min(upto, SCHEMA_VERSION)


def ensure_outputs(con: duckdb.DuckDBPyConnection, registry: Registry = OUTPUTS) -> list[str]:
    """Create the table of every output of ``registry`` the file lacks (after the migrations: a new
    output needs no migration of its own, only its registry entry); returns the tables created."""
    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
    missing = [o for o in registry if o.table not in have]
    for output in missing:
        con.execute(create_table(output))
    return [o.table for o in missing]
