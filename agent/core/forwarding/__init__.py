"""LangFuse forwarding: everything that takes the agent's calls and events to a LangFuse host."""
