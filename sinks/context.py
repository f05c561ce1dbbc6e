"""The context-efficiency tables (storage's part): their DDL, and the statement that marks every stored
session for a refresh. The projection that fills them is ``outloop.projections.context``."""

DDL = """
CREATE TABLE context_efficiency (
    session_id VARCHAR PRIMARY KEY, files_read BIGINT NOT NULL, files_used BIGINT NOT NULL,
    outputs BIGINT NOT NULL, loaded_tokens BIGINT NOT NULL, used_tokens BIGINT NOT NULL,
    carry_tokens BIGINT NOT NULL, used_carry_tokens BIGINT NOT NULL, efficiency DOUBLE,
    waste_tokens BIGINT NOT NULL, reread_tokens BIGINT NOT NULL, oversized_output_tokens BIGINT NOT NULL,
    oversized_used_tokens BIGINT NOT NULL, api_calls BIGINT NOT NULL, total_tokens BIGINT NOT NULL,
    fixed_prefix_tokens BIGINT NOT NULL, fixed_overhead_tokens BIGINT NOT NULL, fixed_overhead_share DOUBLE,
    cache_breaks BIGINT NOT NULL, cache_break_tokens BIGINT NOT NULL, cache_break_cost_usd DOUBLE,
    mcp_tools_called VARCHAR, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ);
CREATE TABLE context_outputs (                                  -- one per tool output (tool_calls.id)
    id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, signature VARCHAR, tool_name VARCHAR,
    target VARCHAR, tokens BIGINT NOT NULL, carry BIGINT NOT NULL, carry_tokens BIGINT NOT NULL,
    used BOOLEAN NOT NULL, reread BOOLEAN NOT NULL, oversized BOOLEAN NOT NULL);
CREATE TABLE file_reads (
    session_id VARCHAR NOT NULL, file_path VARCHAR NOT NULL, times_read BIGINT NOT NULL,
    rereads BIGINT NOT NULL, tokens BIGINT NOT NULL, carry_tokens BIGINT NOT NULL,
    used BOOLEAN NOT NULL, edited BOOLEAN NOT NULL, PRIMARY KEY (session_id, file_path));
CREATE TABLE cache_breaks (
    usage_id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, "at" TIMESTAMPTZ, model VARCHAR,
    cause VARCHAR NOT NULL, gap_seconds DOUBLE, tokens BIGINT NOT NULL, cost_usd DOUBLE, extra_cost_usd DOUBLE);
CREATE TABLE context_profiles (
    signature VARCHAR PRIMARY KEY, tool_name VARCHAR, outputs BIGINT NOT NULL, sessions BIGINT NOT NULL,
    loaded_tokens BIGINT NOT NULL, used_tokens BIGINT, carry_tokens BIGINT NOT NULL,
    used_carry_tokens BIGINT, waste_tokens BIGINT, reread_tokens BIGINT,
    efficiency DOUBLE, potential_tokens BIGINT, potential_pct DOUBLE,
    needed JSON, unused JSON);                                  -- targets used / never used, largest first
CREATE TABLE context_windows (                                  -- the sessions agent's windows (agents.contextwindow)
    id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, opened_at TIMESTAMPTZ, last_event_at TIMESTAMPTZ,
    closed_at TIMESTAMPTZ, close_reason VARCHAR, events BIGINT, outputs BIGINT, loaded_tokens BIGINT,
    carry_tokens BIGINT, reread_tokens BIGINT, api_calls BIGINT, max_prompt_tokens BIGINT,
    compactions BIGINT, cache_break_tokens BIGINT);
CREATE OR REPLACE VIEW v_context_workflows AS
SELECT w.run_id, w.workflow, w.session_id, e.loaded_tokens, e.used_tokens, e.carry_tokens, e.efficiency,
       e.waste_tokens, e.fixed_overhead_tokens, e.cache_break_tokens, e.cache_break_cost_usd
FROM workflow_runs w JOIN context_efficiency e USING (session_id);
"""

MARK_ALL = ("INSERT INTO pattern_dirty SELECT DISTINCT 'context', session_id FROM "
            "(SELECT session_id FROM tool_calls UNION SELECT session_id FROM usage) ON CONFLICT DO NOTHING;")
