"""Readers and writers for shards and CMS exports."""
