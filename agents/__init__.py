"""Capabilities: each module is a pure core (plain functions, time passed in) plus a thin Faust agent."""
