"""The deterministic runner: runs a command exactly as the agent would have, keeps the full log, and
prints a compact result. Stdlib only: it starts on the path of every rewritten tool call."""
