"""The ``context_overhead`` table (storage's part): its DDL. The projection code that fills it (with the
context tables) is ``outloop.projections.overhead``."""

DDL = """
CREATE TABLE context_overhead (                                 -- agents/overhead.py
    session_id VARCHAR PRIMARY KEY, cwd VARCHAR, fixed_prefix_tokens BIGINT NOT NULL,
    memory_tokens BIGINT,           -- estimated; NULL: the project folder was not at hand
    memory_files JSON,              -- [{path, bytes, tokens}]
    rest_tokens BIGINT,             -- first prompt - memory files: system prompt, tool definitions, first messages
    mcp_tools_called JSON, mcp_calls BIGINT NOT NULL, mcp_output_tokens BIGINT NOT NULL,
    mcp_tools_offered BIGINT,       -- not in transcripts or hook payloads: NULL
    mcp_servers_configured JSON, mcp_servers_unused JSON, measured_at TIMESTAMPTZ);
INSERT INTO pattern_dirty SELECT DISTINCT 'context', session_id FROM
    (SELECT session_id FROM tool_calls UNION SELECT session_id FROM usage) ON CONFLICT DO NOTHING;
"""
