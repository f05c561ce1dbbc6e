"""The router: decides, for every PreToolUse call, whether a command goes to a deterministic runner."""
