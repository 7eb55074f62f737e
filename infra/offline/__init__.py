"""The offline engine: runs the real program under strict mocks, no Pulumi CLI, cloud or network."""
