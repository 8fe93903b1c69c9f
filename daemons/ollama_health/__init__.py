"""ollama-health: probes the LLM servers, writes the routing status file, alerts on transitions."""
