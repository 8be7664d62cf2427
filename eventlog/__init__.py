"""eventlog: a domain-free append-only log of msgspec Structs."""
