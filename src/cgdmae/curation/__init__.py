"""Curation: embed the pool, remove near-duplicates, hierarchical k-means, balanced sampling."""
