"""The SQL that reads the usage rows of the quota windows (``agents.quota.UsageRow``), shared by the sink's
quota projection and the ``outloop quota`` commands (a plain text module: the CLI loads no database code
to import it).

Each usage row is joined to its API response in ``api_messages`` for the response's *turn state*: "tool"
when it asked for tools (the agent goes on once they ran), "end" when it only answered (the next call waits
for the user), NULL when no response row says (a source without one, such as a trajectory file).
"""

USAGE_COLUMNS = """u."timestamp", u.input_tokens, u.output_tokens, u.cache_creation_input_tokens,
u.cache_read_input_tokens, u.cost_usd, u.model,
CASE WHEN m.tool_use_ids IS NULL THEN NULL WHEN json_array_length(m.tool_use_ids) > 0 THEN 'tool' ELSE 'end' END
FROM usage u LEFT JOIN api_messages m ON m.id = u.id"""
