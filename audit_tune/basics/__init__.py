"""The bottom layer: version, error types with their exit codes, and output plumbing."""
