"""outloop: watches coding agents, moves their deterministic work out of the LLM loop, keeps them in quota."""

__version__ = "0.1.0"
