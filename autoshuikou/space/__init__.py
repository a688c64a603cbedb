"""space stage."""
