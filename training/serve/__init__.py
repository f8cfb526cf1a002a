"""Serving a trained FrameLM: `framelm serve` (vLLM's OpenAI server) and `framelm chat` (a terminal chat)."""
