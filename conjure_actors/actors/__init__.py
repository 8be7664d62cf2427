"""actors layer (see DESIGN.md)."""
