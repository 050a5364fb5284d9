"""Orchestration: campaigns as Parsl task graphs, checkpointed and resumable."""
