"""llmgw-jupyter."""
