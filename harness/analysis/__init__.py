"""Analysis of a results dataset: polars summaries and comparisons."""
