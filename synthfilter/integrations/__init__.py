"""Integrations with other data tools (Hugging Face datasets)."""
