"""Workers: definitions (built-ins: summarize, extract, classify, style), validators, grounding."""
